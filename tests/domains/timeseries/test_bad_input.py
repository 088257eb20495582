"""Issue 11, time-series domain: every user mistake ends in one clear error naming the file (and
line / column / series) or the config key, through the Python loader and through the CLI (one
line on stderr, exit code 2, no traceback); nothing is accepted silently."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from workbench.errors import ConfigError, DataError, InputError  # noqa: E402
from workbench.domains.timeseries.data import TimeSeriesDataModule, load_dataset  # noqa: E402
from workbench.domains.timeseries.io import from_pandas, read_jsonl, read_wide_csv  # noqa: E402


def _csv(path: Path, n: int = 60, edit=None) -> Path:
    idx = pd.date_range("2024-01-01", periods=n, freq="h")
    df = pd.DataFrame({"date": idx.astype(str), "a": (10 + np.sin(np.arange(n) / 3)).astype(object),
                       "b": 5 + np.cos(np.arange(n) / 4)})
    if edit:
        edit(df)
    df.to_csv(path, index=False)
    return path


def _jsonl(path: Path, *recs) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _gluonts(folder: Path, start: str = "2024-01-01 00:00:00", n: int = 60) -> Path:
    rec = {"start": start, "target": [float(v) for v in 10 + np.sin(np.arange(n) / 3)]}
    for part in ("train", "test"):
        (folder / part).mkdir(parents=True)
        _jsonl(folder / part / "data.json", rec)
    (folder / "metadata").mkdir()
    (folder / "metadata" / "metadata.json").write_text(json.dumps({"freq": "H", "prediction_length": 8}))
    return folder


# -- readers --------------------------------------------------------------------------------------
def test_non_numeric_csv_value_is_refused_with_file_column_and_line(tmp_path: Path) -> None:
    # old: pd.to_numeric(errors="coerce") turned "abc" into NaN without a word
    p = _csv(tmp_path / "text.csv", edit=lambda df: df.__setitem__("a", df["a"].where(df.index != 7, "abc")))
    with pytest.raises(DataError, match=r"text\.csv: column 'a': 1 non-numeric value\(s\) \('abc'\) at lines 9"):
        read_wide_csv(p, freq="H", prediction_length=8, windows=1, date_column="date")
    with pytest.raises(DataError, match=r"text\.csv.*non-numeric.*lines 9"):
        load_dataset(str(p), prediction_length=8)


def test_non_numeric_in_pandas_is_refused() -> None:
    idx = pd.date_range("2024-01-01", periods=30, freq="D")
    s = pd.Series([1.0] * 29 + ["oops"], index=idx, name="x", dtype=object)
    with pytest.raises(DataError, match=r"mydata: column 'x': 1 non-numeric value.*2024-01-30"):
        from_pandas(s, prediction_length=5, name="mydata")


@pytest.mark.parametrize("bad", ["inf", "1e39"])
def test_infinite_or_float32_overflow_csv_values_give_count_and_rows(tmp_path: Path, bad: str) -> None:
    # old: inf and 1e39 (inf once in float32) were accepted; training then logged nan losses
    def edit(df):
        df["b"] = df["b"].astype(object)
        df.loc[[3, 4, 10], "b"] = bad
    p = _csv(tmp_path / "big.csv", edit=edit)
    with pytest.raises(DataError, match=r"big\.csv: column 'b': 3 value\(s\) are infinite or beyond float32's "
                                        r"range .* at lines 5, 6, 12"):
        load_dataset(str(p), prediction_length=8)


def test_float32_overflow_in_jsonl_is_refused(tmp_path: Path) -> None:
    p = _jsonl(tmp_path / "s.json", {"start": "2024-01-01", "target": [1.0, 2.0]},
               {"start": "2024-01-01", "target": [1.0, 1e39, 3.0]})
    with pytest.raises(DataError, match=r"s\.json, line 2: 1 value\(s\) are infinite or beyond float32's range"):
        read_jsonl(p, "H")


@pytest.mark.parametrize("start", ["not a date", "", None])
def test_gluonts_bad_start_is_an_input_error_naming_the_line(tmp_path: Path, start) -> None:
    # old: a plain ValueError subclass (""/None even gave a NaT start); the CLI printed a traceback
    folder = _gluonts(tmp_path / "gl", start=start)
    with pytest.raises(InputError, match=r"train/data\.json, line 1: bad 'start'"):
        load_dataset(str(folder))


def test_too_short_pandas_series_is_not_called_irregular() -> None:
    idx = pd.date_range("2024-01-01", periods=2, freq="h")
    for P in (1, 2, 5):
        with pytest.raises(DataError, match=r"mine: 2 time steps, too few|mine: only 2 timestamps, too few") as e:
            from_pandas(pd.Series([1.0, 2.0], index=idx), prediction_length=P, name="mine")
        assert "irregular" not in str(e.value)


def test_empty_files_and_series(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_dataset(str(tmp_path / "empty.csv"), prediction_length=8)
    (tmp_path / "header.csv").write_text("date,a\n")
    with pytest.raises(DataError, match=r"header\.csv: no data rows"):
        load_dataset(str(tmp_path / "header.csv"), prediction_length=8)
    (tmp_path / "empty.json").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.json: no series found"):
        read_jsonl(tmp_path / "empty.json", "H")
    # old: an empty target was read as a series of length 0
    p = _jsonl(tmp_path / "e.json", {"start": "2024-01-01", "target": []})
    with pytest.raises(DataError, match=r"e\.json, line 1: 'target' is empty"):
        read_jsonl(p, "H")


# -- a path as the dataset, recognised by its form ----------------------------------------------------
def test_dataset_path_csv_jsonl_and_gluonts_folder_are_recognised(tmp_path: Path) -> None:
    # old: every path went to read_gluonts: "not a readable tar archive" for a valid CSV
    ds = load_dataset(str(_csv(tmp_path / "ok.csv")), prediction_length=8)
    assert ds.freq == "h" and [s.item_id for s in ds.train] == ["a", "b"] and len(ds.train[0]) == 52
    rec = {"start": "2024-01-01", "target": list(range(1, 41))}
    ds = load_dataset(str(_jsonl(tmp_path / "ok.jsonl", rec, rec)), prediction_length=8, freq="D", test_windows=2)
    assert ds.freq == "D" and len(ds.train[0]) == 24 and len(ds.test) == 4
    ds = load_dataset(str(_gluonts(tmp_path / "gl")))
    assert ds.prediction_length == 8 and len(ds.train) == 1
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(DataError, match=r"plain: a folder given as the dataset must be a GluonTS dataset"):
        load_dataset(str(plain))


def test_dataset_path_needs_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"datamodule\.prediction_length must be set for the CSV file"):
        load_dataset(str(_csv(tmp_path / "ok.csv")))
    rec = {"start": "2024-01-01", "target": list(range(40))}
    with pytest.raises(ConfigError, match=r"datamodule\.freq must be set for the JSON-lines file"):
        load_dataset(str(_jsonl(tmp_path / "ok.jsonl", rec)), prediction_length=8)
    with pytest.raises(DataError, match=r"nodate\.csv: no date column.*datamodule\.freq"):
        (tmp_path / "nodate.csv").write_text("a\n" + "\n".join(str(i) for i in range(40)) + "\n")
        load_dataset(str(tmp_path / "nodate.csv"), prediction_length=8)


# -- config values -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("prediction_length", 0), ("prediction_length", -3), ("context_length", -5),
                                       ("context_length", 0), ("context_length", 2.5), ("batches_per_epoch", 0),
                                       ("val_windows", -1), ("limit", 0), ("test_windows", 0)])
def test_datamodule_values_are_checked_with_the_key_named(key: str, value) -> None:
    # old: prediction_length=0 and context_length=-5 trained
    with pytest.raises(ConfigError, match=rf"datamodule\.{key}"):
        TimeSeriesDataModule("synthetic", **{key: value})


def test_limit_beyond_the_dataset_and_a_wrong_horizon_are_refused() -> None:
    # old: a limit beyond the number of series was ignored
    dm = TimeSeriesDataModule("synthetic", context_length=48, use_lags=False, limit=100)
    with pytest.raises(ConfigError, match=r"datamodule\.limit' is 100, but synthetic_hourly has only 32"):
        dm.setup("fit")
    dm = TimeSeriesDataModule("synthetic", context_length=48, use_lags=False, prediction_length=12)
    with pytest.raises(ConfigError, match=r"datamodule\.prediction_length' is 12"):
        dm.setup("fit")


# -- through the CLI ---------------------------------------------------------------------------------
FAST = ["train", "experiment=timeseries/synthetic_demo", "trainer.max_epochs=1", "datamodule.batches_per_epoch=2",
        "datamodule.batch_size=4", "datamodule.context_length=16", "callbacks.forecast_val.every_n_epochs=1000"]


def _cli(args: list[str], tmp_path: Path, capsys) -> tuple[int, str]:
    from workbench import cli

    capsys.readouterr()
    rc = cli.main([*FAST, *args, f"run_dir={tmp_path / 'run'}"])
    return rc, capsys.readouterr().err


def _one_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("workbench: error:")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_cli_non_numeric_csv(tmp_path: Path, capsys) -> None:
    p = _csv(tmp_path / "text.csv", edit=lambda df: df.__setitem__("a", df["a"].where(df.index != 7, "abc")))
    rc, err = _cli([f"datamodule.dataset={p}", "datamodule.prediction_length=8"], tmp_path, capsys)
    assert rc == 2
    _one_line(err, "text.csv", "non-numeric", "lines 9")


def test_cli_gluonts_bad_start_inside_fit(tmp_path: Path, capsys) -> None:
    # the demo has no lags, so the folder is first read in datamodule.setup() inside Lightning's fit
    folder = _gluonts(tmp_path / "gl", start="yesterday-ish")
    rc, err = _cli([f"datamodule.dataset={folder}"], tmp_path, capsys)
    assert rc == 2
    _one_line(err, "data.json, line 1", "bad 'start'")


@pytest.mark.parametrize("arg,key", [("datamodule.prediction_length=0", "datamodule.prediction_length"),
                                     ("datamodule.context_length=-5", "datamodule.context_length")])
def test_cli_bad_lengths(tmp_path: Path, capsys, arg: str, key: str) -> None:
    # old: prediction_length was not a config key (an override needed '+'), and 0 / -5 then trained
    rc, err = _cli([arg], tmp_path, capsys)
    assert rc == 2
    _one_line(err, key, "must be >= 1")


def test_cli_trains_on_a_csv_path_without_plus(tmp_path: Path, capsys) -> None:
    p = _csv(tmp_path / "ok.csv")
    rc, err = _cli([f"datamodule.dataset={p}", "datamodule.prediction_length=8", "datamodule.limit=2"], tmp_path, capsys)
    assert rc == 0, err
    assert (tmp_path / "run" / "checkpoints").exists()


# -- the evaluation task ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,key", [({"split": "train"}, "task.split"), ({"max_series": 0}, "task.max_series"),
                                    ({"num_samples": 0}, "task.num_samples"), ({"guidance": "l1"}, "task.guidance"),
                                    ({"scale": -1.0}, "task.scale")])
def test_forecast_task_values_are_checked(tmp_path: Path, kw: dict, key: str) -> None:
    # old: split="train" silently forecast the validation windows; max_series=0 returned {} (exit 0)
    from workbench.domains.timeseries.forecast import forecast_task

    dm = TimeSeriesDataModule("synthetic", context_length=48, use_lags=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        forecast_task(None, dm, tmp_path, **kw)


def test_forecast_task_with_nothing_to_forecast_is_an_error(tmp_path: Path) -> None:
    # old: returned {} and `workbench evaluate` exited 0 having forecast nothing
    from workbench.domains.timeseries.forecast import forecast_task

    dm = TimeSeriesDataModule("synthetic", context_length=48, use_lags=False, val_windows=0)
    with pytest.raises(ConfigError, match=r"task\.split=val, but there are no validation windows"):
        forecast_task(None, dm, tmp_path, split="val")

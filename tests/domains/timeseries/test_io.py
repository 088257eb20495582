"""Readers: GluonTS JSON lines and archives, M4 CSVs, wide CSVs, pandas; clear errors."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from workbench.domains.timeseries.io import (  # noqa: E402
    DataError, from_pandas, read_gluonts, read_jsonl, read_m4, read_wide_csv, rolling_test,
)


def _lines(*recs) -> str:
    return "\n".join(json.dumps(r) for r in recs) + "\n"


def test_jsonl_reads_series_and_names_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "train.json"
    p.write_text(_lines({"start": "2020-01-01 00:00:00", "target": [1, 2, "NaN", 4]},
                        {"start": "2020-01-02", "target": [5.0, 6.0], "item_id": "b"}))
    s = read_jsonl(p, "H")
    assert len(s) == 2 and s[1].item_id == "b" and s[0].freq == "h"
    assert np.isnan(s[0].target[2]) and s[0].target[3] == 4
    assert str(s[0].index()[1]) == "2020-01-01 01:00:00"
    bad = tmp_path / "bad.json"
    bad.write_text(_lines({"start": "2020-01-01", "target": [1]}) + "{oops\n")
    with pytest.raises(DataError, match=r"bad.json, line 2"):
        read_jsonl(bad, "H")
    bad.write_text(_lines({"start": "2020-01-01"}))
    with pytest.raises(DataError, match="'start' and 'target'"):
        read_jsonl(bad, "H")
    bad.write_text(_lines({"start": "2020-01-01", "target": [[1, 2], [3, 4]]}))
    with pytest.raises(DataError, match="one-dimensional"):
        read_jsonl(bad, "H")


def test_gluonts_archive(tmp_path: Path) -> None:
    arc = tmp_path / "toy_nips.tar.gz"
    files = {"toy_nips/metadata/metadata.json": json.dumps({"time_granularity": "B", "prediction_length": 2}),
             "toy_nips/train/train.json": _lines({"start": "2000-01-03", "target": [1, 2, 3, 4]}),
             "toy_nips/test/test.json": _lines({"start": "2000-01-03", "target": [1, 2, 3, 4, 5, 6]})}
    with tarfile.open(arc, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = read_gluonts(arc)
    assert ds.name == "toy_nips" and ds.freq == "B" and ds.prediction_length == 2
    assert len(ds.train) == 1 and len(ds.test[0]) == 6
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="junk.tar.gz"):
        read_gluonts(tmp_path / "junk.tar.gz")


def test_m4_reader(tmp_path: Path) -> None:
    tr, te = tmp_path / "train.csv", tmp_path / "test.csv"
    tr.write_text('"V1","V2","V3","V4"\n"H1",1,2,3\n"H2",4,5,\n')
    te.write_text('"V1","V2","V3"\n"H1",7,8\n"H2",9,10\n')
    ds = read_m4(tr, te, prediction_length=2)
    assert [len(s) for s in ds.train] == [3, 2] and list(ds.test[1].target) == [4, 5, 9, 10]
    assert str(ds.train[0].start) == "1750-01-01 00:00:00"
    te.write_text('"V1","V2"\n"H1",7\n"H2",9\n')
    with pytest.raises(DataError, match="H1 has 1 test values"):
        read_m4(tr, te, prediction_length=2)


def test_wide_csv_rolling_split_and_regularity(tmp_path: Path) -> None:
    p = tmp_path / "w.csv"
    idx = pd.date_range("2021-01-01", periods=10, freq="h")
    pd.DataFrame({"date": idx.astype(str), "a": np.arange(10.0), "b": np.arange(10.0) * 2}).to_csv(p, index=False)
    ds = read_wide_csv(p, freq="H", prediction_length=2, windows=3, date_column="date")
    assert [len(s) for s in ds.train] == [4, 4]
    assert [len(s) for s in ds.test] == [6, 6, 8, 8, 10, 10]
    assert ds.test[-1].item_id == "b" and ds.test[-1].target[-1] == 18
    idx2 = idx.delete(4)
    pd.DataFrame({"date": idx2.astype(str), "a": np.arange(9.0)}).to_csv(p, index=False)
    with pytest.raises(DataError, match="irregular timestamps"):
        read_wide_csv(p, freq="H", prediction_length=2, windows=1, date_column="date")
    with pytest.raises(DataError, match="too few"):
        rolling_test(ds.train, 2, 5)


def test_from_pandas() -> None:
    idx = pd.date_range("2022-01-01", periods=30, freq="D")
    df = pd.DataFrame({"x": np.arange(30.0), "y": np.where(np.arange(30) == 3, np.nan, 1.0)}, index=idx)
    ds = from_pandas(df, prediction_length=5, windows=2)
    assert ds.freq == "D" and len(ds.train) == 2 and len(ds.train[0]) == 20 and len(ds.test) == 4
    assert np.isnan(ds.train[1].target[3])
    ds1 = from_pandas(df["x"], prediction_length=5)
    assert ds1.train[0].item_id == "x"
    irregular = df.drop(idx[[3, 7, 8]])
    with pytest.raises(DataError, match="irregular"):
        from_pandas(irregular, prediction_length=5)
    with pytest.raises(DataError, match="DatetimeIndex"):
        from_pandas(df.reset_index(drop=True), prediction_length=5)


# -- the shared offline copies -------------------------------------------------------------------------
def _need(rel: str) -> Path:
    from workbench.data import data_root

    p = data_root() / rel
    if not p.exists():
        pytest.skip(f"{rel} is not under WORKBENCH_DATA ({data_root()})")
    return p


def test_real_m4_hourly() -> None:
    _need("timeseries/m4_Hourly-train.csv")
    from workbench.domains.timeseries.data import load_dataset

    ds = load_dataset("m4_hourly")
    assert len(ds.train) == 414 and len(ds.test) == 414
    lens = [len(s) for s in ds.train]
    assert min(lens) == 700 and max(lens) == 960
    assert all(len(te) == len(tr) + 48 for tr, te in zip(ds.train, ds.test))


def test_real_exchange_rate_nips_and_lstnet() -> None:
    _need("timeseries/exchange_rate_nips.tar.gz")
    from workbench.domains.timeseries.data import load_dataset

    ds = load_dataset("exchange_rate_nips")
    assert ds.freq == "B" and ds.prediction_length == 30
    assert len(ds.train) == 8 and {len(s) for s in ds.train} == {6071}
    assert sorted({len(s) for s in ds.test}) == [6101, 6131, 6161, 6191, 6221] and len(ds.test) == 40
    _need("timeseries/exchange_rate.txt.gz")
    lst = load_dataset("exchange_rate")
    assert len(lst.train) == 8 and len(lst.train[0]) == 7588 - 150 and len(lst.test) == 40


def test_real_etth1() -> None:
    _need("timeseries/ETTh1.csv")
    from workbench.domains.timeseries.data import load_dataset

    ds = load_dataset("etth1")
    assert len(ds.train) == 1 and len(ds.train[0]) == 14400 - 7 * 24 and len(ds.test) == 7
    assert str(ds.train[0].start) == "2016-07-01 00:00:00"

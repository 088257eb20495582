"""The network's input width follows the data's lag channels: the configs derive it from the
datamodule's dataset and use_lags (no number kept in step by hand), so changing the lags or the
dataset alone still composes and trains."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("pandas")

from hydra.utils import instantiate  # noqa: E402

from workbench.cli import build, compose_config, train  # noqa: E402
from workbench.domains.timeseries import data as ts_data  # noqa: E402
from workbench.domains.timeseries.data import (  # noqa: E402
    DATASETS, FREQ, PAPER_ONLY, TimeSeriesDataModule, lags_for_freq, load_dataset, window_channels,
)
from workbench.domains.timeseries.io import DataError  # noqa: E402


def _experiments() -> list[str]:
    root = Path(str(resources.files("workbench.domains.timeseries.configs"))) / "experiment"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in (root / "timeseries").glob("*.yaml")
                  if not p.name.startswith("_"))


@pytest.mark.parametrize("experiment", _experiments())
@pytest.mark.parametrize("use_lags", [None, True, False])
def test_network_width_is_derived_from_the_datamodule(experiment: str, use_lags: bool | None) -> None:
    overrides = [f"experiment={experiment}"] + ([] if use_lags is None else [f"datamodule.use_lags={use_lags}"])
    cfg = compose_config(overrides)
    name, lags = cfg.datamodule.dataset, bool(cfg.datamodule.use_lags)
    expected = 1 + (len(lags_for_freq(FREQ[name])) if lags else 0)
    assert instantiate(cfg.network.input_dim) == expected
    if lags:  # the paper's widths: hourly 1 + 10, business-daily 1 + 12
        assert expected == {"H": 11, "B": 13, "D": 13}[FREQ[name]]


def test_every_named_dataset_has_a_frequency_and_it_is_the_datas() -> None:
    assert set(FREQ) == set(DATASETS) | set(PAPER_ONLY)
    checked = 0
    for name in FREQ:
        try:
            ds = load_dataset(name)
        except FileNotFoundError:  # not under WORKBENCH_DATA here
            continue
        assert lags_for_freq(ds.freq) == lags_for_freq(FREQ[name]), name
        checked += 1
    assert checked >= 1  # at least the embedded synthetic set


def test_changing_only_the_lags_still_trains(tmp_path: Path, monkeypatch) -> None:
    """The demo has no lags; turning them on (11 channels for hourly data) is one override."""
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    cfg = compose_config(["experiment=timeseries/synthetic_demo", "datamodule.use_lags=true", "debug=fast",
                          f"run_dir={tmp_path}", "trainer.accelerator=cpu", "datamodule.context_length=48"])
    dm, module, _ = build(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[-1] == module.network.input_dim == dm.input_dim == 11
    train(cfg)
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert (tmp_path / "config.yaml").exists()
    assert window_channels("synthetic", False) == 1


def test_data_whose_frequency_differs_from_the_registry_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(ts_data.FREQ, "synthetic", "D")       # the network would be sized for daily lags
    with pytest.raises(DataError, match="other lags than the registered 'D'"):
        TimeSeriesDataModule("synthetic", context_length=48, use_lags=True).setup("fit")
    TimeSeriesDataModule("synthetic", context_length=48, use_lags=False).setup("fit")  # no lags, no conflict

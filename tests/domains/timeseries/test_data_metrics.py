"""Windows, lags, scaling, the data module, and the GluonTS metrics against hand values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pandas")

from workbench.domains.timeseries.data import (  # noqa: E402
    RandomDrawSampler, TimeSeriesDataModule, WindowDataset, lags_for_freq, mean_scale, synthetic_dataset, window,
)
from workbench.domains.timeseries.io import DataError, TimeSeries, TimeSeriesDataset  # noqa: E402
from workbench.domains.timeseries.metrics import forecast_metrics, sample_quantile, weighted_quantile_loss  # noqa: E402


def test_lags_per_frequency() -> None:
    assert lags_for_freq("H") == [24, 48, 72, 96, 120, 144, 168, 336, 504, 672]
    assert lags_for_freq("B") == lags_for_freq("D") == [30 * i for i in range(1, 13)]
    with pytest.raises(ValueError, match="use_lags"):
        lags_for_freq("W")


def test_window_lags_scale_and_masks() -> None:
    s = np.arange(1, 11, dtype=np.float32)       # 1..10
    s[6] = np.nan                                 # value 7 missing
    x, m, scale = window(s, end=10, length=4, lags=[2, 8], context_length=3)
    # window = values 7..10 (index 6..9); context = [nan, 8, 9] -> scale = mean(8, 9) = 8.5
    assert scale == pytest.approx(8.5)
    np.testing.assert_allclose(x[:, 0] * scale, [0, 8, 9, 10])
    np.testing.assert_array_equal(m[:, 0], [0, 1, 1, 1])
    np.testing.assert_allclose(x[:, 1] * scale, [5, 6, 0, 8])      # lag 2: value index 4, 5, 6 (nan), 7
    np.testing.assert_array_equal(m[:, 1], [1, 1, 0, 1])
    np.testing.assert_array_equal(m[:, 2], [0, 0, 1, 1])            # lag 8: before the start for the first two
    np.testing.assert_allclose(x[2:, 2] * scale, [1, 2])
    # a horizon beyond the data: hidden (mask 0)
    x, m, _ = window(s[:8], end=10, length=4, lags=[], context_length=2)
    np.testing.assert_array_equal(m[:, 0], [0, 1, 0, 0])
    assert mean_scale(np.zeros(3), np.ones(3, bool), fallback=2.0) == 2.0


def test_window_dataset_and_sampler() -> None:
    series = [TimeSeries(np.arange(10.0), "2020-01-01", "h", "a"), TimeSeries(np.arange(5.0) + 1, "2020-01-01", "h", "b")]
    ds = WindowDataset(series, 3, 1, [])
    assert len(ds) == 7 + 2
    last = ds[8]["x"][:, 0] * ds[8]["scale"]
    np.testing.assert_allclose(last.numpy(), [2, 3, 4, 5])
    with pytest.raises(DataError, match="shorten context_length"):
        WindowDataset(series, 20, 5, [])
    a = list(RandomDrawSampler(9, 50, seed=3))
    assert a == list(RandomDrawSampler(9, 50, seed=3)) and len(a) == 50 and max(a) < 9
    s = RandomDrawSampler(9, 50, seed=3)
    s.set_epoch(1)
    assert list(s) != a


def test_datamodule_on_synthetic_and_errors() -> None:
    dm = TimeSeriesDataModule("synthetic", context_length=72, use_lags=True, batch_size=8, batches_per_epoch=3)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (8, 96, 11) and b["mask"].shape == (8, 96, 11)
    assert len(list(dm.train_dataloader())) == 3
    assert dm.val_set and dm.input_dim == 11
    # context of each training window is mean-scaled to 1 where fully observed
    full = b["mask"][:, :72, 0].all(1)
    ctx = b["x"][full, :72, 0].abs().mean(1)
    torch.testing.assert_close(ctx, torch.ones_like(ctx), rtol=1e-5, atol=1e-5)
    assert synthetic_dataset().train[0].target[5] == synthetic_dataset().train[0].target[5]
    short = TimeSeriesDataset("tiny", "h", 24, [TimeSeries(np.ones(100), "2020-01-01", "h", "s1")],
                              [TimeSeries(np.ones(60), "2020-01-01", "h", "s1")])
    with pytest.raises(DataError, match="shorter than context"):
        TimeSeriesDataModule(short, context_length=48).setup("fit")
    with pytest.raises(DataError, match="unknown time-series dataset"):
        TimeSeriesDataModule("nope").setup("fit")
    with pytest.raises(FileNotFoundError, match="get_dataset"):
        TimeSeriesDataModule("solar_nips").setup("fit")


def test_quantile_is_gluonts_sorted_sample() -> None:
    s = np.arange(16.0)[None, ::-1, None].copy()          # 16 samples 15..0, one step
    # index round(15 q): 0.1 -> 2 (1.5 rounds to even), 0.3 -> 4 (4.5 -> 4), 0.5 -> 8 (7.5 -> 8)
    assert [sample_quantile(s, q)[0, 0] for q in (0.1, 0.3, 0.5, 0.7, 0.9)] == [2, 4, 8, 10, 14]


def test_metrics_hand_values() -> None:
    target = np.array([[1.0, 2.0], [3.0, np.nan]])
    samples = np.array([[[0.0, 2.0], [2.0, 4.0], [1.0, 3.0]],      # series 1: 3 samples
                        [[3.0, 0.0], [5.0, 0.0], [4.0, 0.0]]])
    # sorted samples: s1 step1 [0,1,2], step2 [2,3,4]; s2 step1 [3,4,5]; idx = round(2 q)
    # q = 0.5 -> idx 1: forecasts [1, 3], [4]; errors y - f: 0, -1, -1
    # wQL_0.5 = 2 * (0 + 0.5 + 0.5) / (1 + 2 + 3) = 1/3
    assert weighted_quantile_loss(target, sample_quantile(samples, 0.5), 0.5) == pytest.approx(1 / 3)
    # q = 0.1 -> idx round(0.2) = 0: forecasts [0, 2], [3]; |(y - f)(1{y<=f} - q)|:
    # y=1, f=0: 0.1; y=2, f=2: 0; y=3, f=3: 0 -> 2 * 0.1 / 6
    assert weighted_quantile_loss(target, sample_quantile(samples, 0.1), 0.1) == pytest.approx(0.2 / 6)
    m = forecast_metrics(samples, target)
    assert m["ND"] == pytest.approx(2 / 6)
    # mean forecasts: [1, 3], [4] -> errors 0, 1, 1 -> RMSE sqrt(2/3); mean |y| = 2
    assert m["NRMSE"] == pytest.approx(np.sqrt(2 / 3) / 2)
    assert m["CRPS"] == pytest.approx(np.mean([m[f"wQL[{q / 10:g}]"] for q in range(1, 10)]))
    # a point forecast: every quantile is the point, the mean of |1{y<=f} - q| over q is 1/2, so CRPS = ND
    point = forecast_metrics(samples[:, :1], target)
    assert point["CRPS"] == pytest.approx(point["ND"], abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        forecast_metrics(np.full((2, 3, 2), np.nan), target)

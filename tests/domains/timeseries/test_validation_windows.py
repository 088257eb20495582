"""Validation windows of TSDiff (issue 12, point 5): several per series, rolling back from the test
start, non-overlapping, held out from training; ``max_windows`` / ``max_series`` as named; and why
one window is not enough to pick a checkpoint."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.domains.timeseries.data import (VAL_TARGET_WINDOWS, TimeSeriesDataModule, split_validation,
                                               synthetic_dataset)
from workbench.domains.timeseries.io import TimeSeries
from workbench.domains.timeseries.metrics import forecast_metrics
from workbench.domains.timeseries.validation import ForecastValidation, select_windows

P = 24


def _dm(ds, **kw) -> TimeSeriesDataModule:
    dm = TimeSeriesDataModule(ds, context_length=96, use_lags=False, batch_size=8, **kw)
    dm.setup("fit")
    return dm


def _horizon(full: TimeSeries, entry: TimeSeries) -> tuple[int, int]:
    """[start, end) of an entry's last P points in its full series (entries are prefixes)."""
    n = len(entry)
    np.testing.assert_array_equal(entry.target, full.target[:n])
    return n - P, n


def test_windows_roll_back_from_the_test_start_and_are_held_out_from_training() -> None:
    ds = synthetic_dataset(n_series=4, length=24 * 7 * 4, windows=2)
    dm = _dm(ds, val_windows=3)
    assert len(dm.val_series) == 4 * 3
    # nearest the test start first, every series, then one horizon back, ...
    assert dm.val_index == [(i, back) for back in range(3) for i in range(4)]
    first_test = {s.item_id: s for s in ds.test[:4]}            # rolling_test: window 1 of each series first
    for i, full in enumerate(ds.train):
        test_start = len(first_test[full.item_id]) - P
        assert test_start == len(full)                          # a train series ends where its test starts
        spans = sorted(_horizon(full, e) for e, (j, _) in zip(dm.val_series, dm.val_index) if j == i)
        # three horizons tiling the last 3 P points before the test start: contiguous, not overlapping
        assert spans == [(test_start - P * k, test_start - P * (k - 1)) for k in (3, 2, 1)]
        # the training series stops where the first validation horizon starts ...
        train = dm.train_series[i]
        assert len(train) == spans[0][0]
        np.testing.assert_array_equal(train.target, full.target[: len(train)])
    # ... and no training window reaches past it
    ws = dm.train_set
    for i, s in enumerate(ws.series):
        last_end = ws.C + ws.P + int(ws.offsets[i + 1] - ws.offsets[i]) - 1
        assert last_end == len(s) == len(ds.train[i]) - 3 * P
    # the last training window's values are the series' values right before the held-out stretch
    k = int(ws.offsets[1]) - 1
    x = ws[k]["x"][:, 0].numpy() * float(ws[k]["scale"])
    np.testing.assert_allclose(x, ds.train[0].target[len(ds.train[0]) - 3 * P - 120: len(ds.train[0]) - 3 * P],
                               rtol=1e-5)


def test_default_gives_enough_windows_and_spares_short_series() -> None:
    # 32 series: 2 each (64 in all); one long series: 64 of it; val_windows=0: none
    dm = _dm(synthetic_dataset(n_series=32))
    assert len(dm.val_series) == VAL_TARGET_WINDOWS == 64
    assert set(Counter(i for i, _ in dm.val_index).values()) == {2}
    one = synthetic_dataset(n_series=1, length=24 * 7 * 52)
    dm = _dm(one)
    assert len(dm.val_series) == 64 and len(dm.train_series[0]) == len(one.train[0]) - 64 * P
    assert _dm(one, val_windows=0).val_series == []
    # a series gives up at most a fifth of its points by default, and keeps C + P for training
    mid = synthetic_dataset(n_series=2, length=24 * 20)
    assert Counter(i for i, _ in _dm(mid).val_index) == {0: 4, 1: 4}       # 0.2 * 480 / 24
    assert Counter(i for i, _ in _dm(mid, val_windows=50).val_index) == {0: 15, 1: 15}   # (480 - 120) / 24
    short = [TimeSeries(np.ones(130), "2020-01-01", "h", "a"), TimeSeries(np.ones(200), "2020-01-01", "h", "b")]
    train, val = split_validation(short, P, 3, 120)
    assert [len(s) for s in train] == [130, 200 - 3 * P] and [s.item_id for s in val] == ["b"] * 3


def test_max_windows_and_max_series_do_what_they_say(monkeypatch, tmp_path) -> None:
    dm = _dm(synthetic_dataset(n_series=6, length=24 * 7 * 4), val_windows=3)
    ids = [s.item_id for s in dm.dataset.train]
    # max_series: every window of the first n series, none of the others
    got = select_windows(dm, max_series=2)
    assert Counter(e.item_id for e in got) == {ids[0]: 3, ids[1]: 3}
    # max_windows: n windows in all, spread over the series, nearest the test start first
    got = select_windows(dm, max_windows=8)
    assert len(got) == 8 and {e.item_id for e in got} == set(ids)
    assert [e.item_id for e in got[:6]] == ids and all(len(e) == len(t) for e, t in zip(got, dm.dataset.train))
    assert len(select_windows(dm, max_series=2, max_windows=4)) == 4
    assert len(select_windows(dm)) == 18
    for bad in ({"max_series": 0}, {"max_windows": 0}, {"max_windows": 2.5}):
        with pytest.raises(Exception, match="max_"):
            ForecastValidation(**bad)

    # the callback forecasts exactly the selected windows
    seen: list[list] = []

    class FakeTSDiff:
        @classmethod
        def from_datamodule(cls, module, dm):
            return cls()

        def predict(self, entries, **kw):
            seen.append(list(entries))
            samples = np.stack([np.repeat(e.target[None, -P:], 2, 0) for e in entries])
            return SimpleNamespace(metrics=lambda es: forecast_metrics(samples, np.stack([e.target[-P:] for e in es])))

    import workbench.domains.timeseries.validation as validation

    monkeypatch.setattr(validation, "TSDiff", FakeTSDiff)
    trainer = SimpleNamespace(current_epoch=0, sanity_checking=False, fast_dev_run=False, datamodule=dm,
                              global_step=0, is_global_zero=True, checkpoint_callback=None,
                              default_root_dir=str(tmp_path), save_checkpoint=lambda *a, **k: None)
    module = SimpleNamespace(log=lambda *a, **k: None)
    for kw, n, n_series in (({"max_windows": 5}, 5, 5), ({"max_series": 1}, 3, 1), ({}, 18, 6)):
        ForecastValidation(every_n_epochs=1, **kw).on_train_epoch_end(trainer, module)
        assert len(seen[-1]) == n and len({e.item_id for e in seen[-1]}) == n_series


def _seasonal_forecast(entries, days, rng, samples=16, spread=0.1):
    out = []
    for s in entries:
        h = s.target[: len(s) - P]
        point = np.mean([h[len(h) - 24 * d: len(h) - 24 * d + P] for d in days], axis=0)
        out.append(point[None] * np.exp(rng.normal(0, spread, (samples, P))))
    return np.stack(out)


def _crps(entries, days, seed=0) -> float:
    target = np.stack([s.target[len(s) - P:] for s in entries])
    return forecast_metrics(_seasonal_forecast(entries, days, np.random.default_rng(seed)), target)["CRPS"]


def test_many_windows_rank_two_models_as_the_test_does_one_window_does_not() -> None:
    """Two stand-in "checkpoints" (seasonal naive on the last day, and on the mean of the last two
    days, both with the same sample spread); over 20 synthetic data sets, how often does the
    validation CRPS order them as the test CRPS does? One window (the old etth1 set-up: one series,
    its last horizon) is about a coin toss; the default windows agree every time."""
    a, b = (1,), (1, 2)
    one_agrees = many_agrees = 0
    for seed in range(20):
        ds = synthetic_dataset(n_series=8, length=24 * 7 * 4, windows=2, seed=seed)
        truth = _crps(ds.test, a) < _crps(ds.test, b)
        one = select_windows(_dm(ds, val_windows=1), max_series=1)
        many = select_windows(_dm(ds))
        assert len(one) == 1 and len(many) == 40      # 8 series x 5 (a fifth of 672 points)
        one_agrees += (_crps(one, a, 1) < _crps(one, b, 1)) == truth
        many_agrees += (_crps(many, a, 1) < _crps(many, b, 1)) == truth
    assert many_agrees >= 18 and one_agrees <= 15, (one_agrees, many_agrees)

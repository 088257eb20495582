"""Base forecasters of the TSDiff paper that run anywhere: seasonal naive (GluonTS's
``SeasonalNaivePredictor``) and the linear (ridge) forecaster of TSDiff's ``LinearEstimator``,
which is also the model of the linear predictive score (LPS) of synthetic data."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import mean_scale
from .io import TimeSeries

__all__ = ["seasonality", "seasonal_naive", "RidgeForecaster", "training_windows"]

# GluonTS's default seasonalities (``gluonts.time_feature.get_seasonality``).
_SEASONALITY = {"S": 3600, "MIN": 1440, "T": 1440, "H": 24, "D": 1, "B": 5, "W": 1, "ME": 12, "M": 12, "QE": 4, "Q": 4}


def seasonality(freq: str) -> int:
    """GluonTS's seasonality of a frequency (hourly 24, business-daily 5, daily 1 ...), divided
    by the multiple (``"2h"`` -> 12)."""
    import pandas as pd

    from .io import normalize_freq

    off = pd.tseries.frequencies.to_offset(normalize_freq(freq))
    base = off.name.split("-")[0].upper()
    s = _SEASONALITY.get(base, 1)
    return max(s // off.n, 1) if s % off.n == 0 else 1


def _ffill(v: np.ndarray) -> np.ndarray:
    out = v.copy()
    for i in range(1, len(out)):
        if np.isnan(out[i]):
            out[i] = out[i - 1]
    return np.nan_to_num(out, nan=float(np.nanmean(v)) if np.isfinite(v).any() else 0.0)


def seasonal_naive(entries: Sequence[TimeSeries], prediction_length: int, season: int | None = None) -> np.ndarray:
    """Point forecasts ``[N, 1, P]``: the last observed season repeated (missing values are
    forward-filled first). The last P points of each entry are the horizon and are not used."""
    out = []
    for s in entries:
        past = _ffill(s.target[: len(s) - prediction_length])
        m = season or seasonality(s.freq)
        if len(past) < m:
            out.append(np.full(prediction_length, past[-1], dtype=np.float32))
            continue
        last = past[-m:]
        out.append(np.array([last[t % m] for t in range(prediction_length)], dtype=np.float32))
    return np.stack(out)[:, None]


def training_windows(series: Sequence[TimeSeries], length: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` fully observed windows ``[n, length]`` drawn uniformly over (series, position)."""
    rng = np.random.default_rng(seed)
    counts = np.array([max(len(s) - length + 1, 0) for s in series], dtype=float)
    if counts.sum() == 0:
        raise ValueError(f"no series has {length} points")
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        i = rng.choice(len(series), p=counts / counts.sum())
        e = rng.integers(length, len(series[i]) + 1)
        w = series[i].target[e - length: e]
        if not np.isnan(w).any():
            out.append(w)
    if not out:
        raise ValueError("every window has missing values; the ridge forecaster needs complete windows")
    return np.stack(out).astype(np.float64)


class RidgeForecaster:
    """TSDiff's "linear" forecaster: ridge regression (scikit-learn, alpha 1) from the mean-scaled
    context to the scaled horizon, fitted on ``num_train_samples`` random training windows.

    Args:
        context_length, prediction_length: C and P.
        num_train_samples: training windows (TSDiff: 10,000).
        scaling: divide by the context's mean |value| (off for synthetic windows, which are
            already scaled).
        alpha: ridge penalty.
    """

    def __init__(self, context_length: int, prediction_length: int, num_train_samples: int = 10_000,
                 scaling: bool = True, alpha: float = 1.0) -> None:
        self.C, self.P, self.n, self.scaling, self.alpha = int(context_length), int(prediction_length), int(num_train_samples), bool(scaling), float(alpha)
        self.model = None

    def fit_windows(self, windows: np.ndarray) -> "RidgeForecaster":
        """Fit on windows ``[n, C + P]`` (context then horizon)."""
        from sklearn.linear_model import Ridge

        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.C + self.P:
            raise ValueError(f"windows must be [n, {self.C + self.P}], got {w.shape}")
        x, y = w[:, : self.C], w[:, self.C:]
        if self.scaling:
            sc = np.array([mean_scale(r, np.ones_like(r, bool)) for r in x])[:, None]
            x, y = x / sc, y / sc
        self.model = Ridge(alpha=self.alpha).fit(x, y)
        return self

    def fit(self, series: Sequence[TimeSeries], seed: int = 0) -> "RidgeForecaster":
        """Fit on random complete windows of the training series."""
        return self.fit_windows(training_windows(series, self.C + self.P, self.n, seed))

    def predict(self, entries: Sequence[TimeSeries]) -> np.ndarray:
        """Point forecasts ``[N, 1, P]`` of the last P points of each entry."""
        if self.model is None:
            raise RuntimeError("fit the forecaster first")
        ctx = np.stack([_ffill(s.target[len(s) - self.P - self.C: len(s) - self.P]) for s in entries]).astype(np.float64)
        if ctx.shape[1] != self.C:
            raise ValueError(f"entries need at least C + P = {self.C + self.P} points")
        sc = np.array([mean_scale(r, np.ones_like(r, bool)) for r in ctx])[:, None] if self.scaling else np.ones((len(ctx), 1))
        out = self.model.predict(ctx / sc) * sc
        return out[:, None].astype(np.float32)

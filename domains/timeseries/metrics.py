"""Forecast metrics exactly as GluonTS's ``Evaluator`` computes them (TSDiff reports its
``mean_wQuantileLoss`` as "CRPS"), in NumPy.

For forecasts ``samples [N, S, P]`` and targets ``[N, P]`` (NaN targets are skipped):

* quantile forecast at level q: the sorted sample at index round((S - 1) q) (GluonTS's
  ``SampleForecast.quantile``; NumPy's round-half-to-even);
* wQL_q = 2 sum |(y - y_q)(1{y <= y_q} - q)| / sum |y|, summed over all series and steps;
* CRPS = mean of wQL_q over q = 0.1 .. 0.9;
* ND = sum |y - y_0.5| / sum |y|;
* NRMSE = sqrt(mean (y - mean forecast)^2) / mean |y|.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["QUANTILES", "sample_quantile", "weighted_quantile_loss", "forecast_metrics", "WindowMetrics"]

QUANTILES = tuple(round(0.1 * k, 1) for k in range(1, 10))


def sample_quantile(samples: np.ndarray, q: float) -> np.ndarray:
    """GluonTS's quantile of a sample forecast: ``samples [..., S, P] -> [..., P]``."""
    s = np.sort(samples, axis=-2)
    idx = int(np.round((s.shape[-2] - 1) * q))
    return s[..., idx, :]


def weighted_quantile_loss(target: np.ndarray, forecast_q: np.ndarray, q: float) -> float:
    """wQL_q over all entries (NaN targets skipped)."""
    m = ~np.isnan(target)
    y, f = target[m], forecast_q[m]
    denom = np.abs(y).sum()
    return float(2 * np.abs((y - f) * ((y <= f).astype(float) - q)).sum() / denom)


def forecast_metrics(samples: np.ndarray, target: np.ndarray,
                     quantiles: Sequence[float] = QUANTILES) -> dict[str, float]:
    """``{"CRPS", "ND", "NRMSE", "wQL[q]"...}`` of sample forecasts ``[N, S, P]`` against ``[N, P]``."""
    samples, target = np.asarray(samples, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples[:, None]
    if samples.ndim != 3 or samples.shape[0] != target.shape[0] or samples.shape[2] != target.shape[1]:
        raise ValueError(f"samples must be [N, S, P] and target [N, P]; got {samples.shape} and {target.shape}")
    if np.isnan(samples).any():
        raise ValueError("forecast samples contain NaN")
    m = ~np.isnan(target)
    if not m.any() or np.abs(target[m]).sum() == 0:
        raise ValueError("the targets are all missing or all zero; the weighted metrics are undefined")
    out = {f"wQL[{q:g}]": weighted_quantile_loss(target, sample_quantile(samples, q), q) for q in quantiles}
    out["CRPS"] = float(np.mean([out[f"wQL[{q:g}]"] for q in quantiles]))
    y = target[m]
    out["ND"] = float(np.abs(y - sample_quantile(samples, 0.5)[m]).sum() / np.abs(y).sum())
    mean = samples.mean(1)[m]
    out["NRMSE"] = float(np.sqrt(np.mean((y - mean) ** 2)) / np.mean(np.abs(y)))
    return out


class WindowMetrics:
    """Scores synthetic windows ``[n, L, ch]`` against real windows ``[m, L, ch]`` (both
    mean-scaled; channel 0 is the series):

    * ``lps_ref``: CRPS on the real windows of a ridge forecaster (horizon from context)
      fitted on the synthetic ones -- the linear predictive score, here on the reference
      windows instead of the test split (the full LPS is
      :func:`workbench.domains.timeseries.forecast.linear_predictive_score`);
    * ``mean_err`` / ``std_err``: absolute errors of the marginal mean and standard deviation;
    * ``acf_err``: mean absolute error of the autocorrelation at lags 1..``max_lag``.

    Args:
        prediction_length: P (the horizon of the windows).
        max_lag: autocorrelation lags.
    """

    def __init__(self, prediction_length: int, max_lag: int = 24) -> None:
        self.P, self.max_lag = int(prediction_length), int(max_lag)

    @staticmethod
    def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
        x = x - x.mean(1, keepdims=True)
        var = (x * x).mean(1) + 1e-12
        return np.stack([(x[:, k:] * x[:, :-k]).mean(1) / var for k in range(1, max_lag + 1)], 1).mean(0)

    def __call__(self, samples: Any, reference: Any) -> dict[str, float]:
        from .baselines import RidgeForecaster

        s = np.asarray(samples[..., 0].detach().cpu() if hasattr(samples, "detach") else samples[..., 0], dtype=np.float64)
        r = np.asarray(reference[..., 0].detach().cpu() if hasattr(reference, "detach") else reference[..., 0], dtype=np.float64)
        L = s.shape[1]
        f = RidgeForecaster(L - self.P, self.P, scaling=False).fit_windows(s)
        pred = f.model.predict(r[:, : L - self.P])
        lag = min(self.max_lag, L - 1)
        return {
            "lps_ref": forecast_metrics(pred[:, None], r[:, L - self.P:])["CRPS"],
            "mean_err": float(abs(s.mean() - r.mean())),
            "std_err": float(abs(s.std() - r.std())),
            "acf_err": float(np.abs(self._acf(s, lag) - self._acf(r, lag)).mean()),
        }

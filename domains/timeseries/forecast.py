"""TSDiff's three tasks on a trained unconditional model (Kollovieh et al. 2023):

* **predict** -- observation self-guidance (Sec. 3.1): MSE guidance (TSDiff-MS) or quantile
  guidance (TSDiff-Q, sample k of N guided at level k / (N + 1)), on the ancestral DDPM sampler
  (the paper's) or on DDIM; missing-value scenarios RM, BM-B and BM-E hide part of the context.
* **refine** (Sec. 3.2) -- improve base forecasts by gradient descent (maximum likelihood) or
  Langevin dynamics (LMC) on E(y) = denoising loss at a fixed step + lambda R(y, base).
* **synthesize** (Sec. 3.3) -- unconditional windows; the linear predictive score (LPS) is the
  CRPS on the real test set of a ridge model trained on them.

All work on windows of ``C + P`` steps scaled by the mean |value| of the observed context; the
forecast is channel 0 of the last P steps, times the scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.guidance import SelfGuidanceFactory, masked_energy, sample_self_guided_ddpm
from workbench.operators import Mask
from workbench.samplers import sample_ddim

from .baselines import RidgeForecaster
from .data import lags_for_freq, window
from .io import TimeSeries
from .metrics import forecast_metrics, sample_quantile

__all__ = ["Forecast", "TSDiff", "missing_positions", "quantile_levels", "observation_energy", "observation_batch",
           "linear_predictive_score"]

Guidance = Literal["quantile", "mse"]
Missing = Literal["RM", "BM-B", "BM-E"]


def quantile_levels(n_series: int, num_samples: int, device: Any = "cpu") -> Tensor:
    """``[n_series * num_samples]`` levels k / (N + 1), k = 1..N, repeated per series (the
    samples of a series are consecutive)."""
    q = torch.arange(1, num_samples + 1, dtype=torch.float32, device=device) / (num_samples + 1)
    return q.repeat(n_series)


def observation_energy(y: Tensor, obs_mask: Tensor, kind: Guidance, q: Tensor | None = None):
    """E(x0) per sample: sum over observed entries of (x0 - y)^2 (``"mse"``) or of the pinball
    loss max(q e, (q - 1) e), e = y - x0, at the sample's level q (``"quantile"``); the core's
    :func:`workbench.guidance.masked_energy`, which the ``self_guidance`` factory uses."""
    if kind not in ("mse", "quantile"):
        raise ValueError(f"guidance must be 'quantile' or 'mse', got {kind!r}")
    return masked_energy(y, obs_mask, kind, q)


def observation_batch(y: Tensor, obs_mask: Tensor, q: Tensor | None = None) -> dict[str, Any]:
    """The windows as an observation batch of the core's guidance factories: the state ``y``
    (scaled windows, horizon and missing values 0), observed where ``obs_mask`` is 1 (a
    :class:`~workbench.operators.Mask`), with the quantile levels ``q`` of TSDiff-Q."""
    return {"x": y, "observation": {"y": y, "obs_mask": obs_mask, "operator": Mask(obs_mask),
                                    "quantile_levels": q}}


def missing_positions(kind: Missing, context_length: int, n_missing: int, rng: np.random.Generator) -> np.ndarray:
    """Context positions hidden in TSDiff's missing-value experiments: ``RM`` random, ``BM-B`` a
    block at the beginning, ``BM-E`` a block at the end of the context."""
    if not 0 < n_missing < context_length:
        raise ValueError(f"n_missing must be in (0, {context_length}), got {n_missing}")
    if kind == "RM":
        return np.sort(rng.choice(context_length, n_missing, replace=False))
    if kind == "BM-B":
        return np.arange(n_missing)
    if kind == "BM-E":
        return np.arange(context_length - n_missing, context_length)
    raise ValueError(f"missing-value scenario must be 'RM', 'BM-B' or 'BM-E', got {kind!r}")


@dataclass
class Forecast:
    """Sample forecasts of the last P steps of some series.

    Attributes:
        samples: ``[N, S, P]`` in the data's units.
        item_ids: series names.
        index: per series, the DatetimeIndex of the P forecast steps.
        info: what produced it (method, NFE, seconds ...).
    """

    samples: np.ndarray
    item_ids: list[str]
    index: list[Any]
    info: dict[str, Any] = field(default_factory=dict)

    def quantile(self, q: float) -> np.ndarray:
        """``[N, P]`` GluonTS sample quantile."""
        return sample_quantile(self.samples, q)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(1)

    def metrics(self, entries: Sequence[TimeSeries]) -> dict[str, float]:
        """CRPS (mean wQL), ND, NRMSE against the last P points of ``entries``."""
        P = self.samples.shape[-1]
        target = np.stack([s.target[len(s) - P:] for s in entries])
        return forecast_metrics(self.samples, target)

    def to_frame(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> Any:
        """A tidy DataFrame: one row per (series, timestamp) with ``mean`` and one column per quantile."""
        import pandas as pd

        qs = {f"q{q:g}": self.quantile(q) for q in quantiles}
        rows = []
        mean = self.mean
        for i, (item, idx) in enumerate(zip(self.item_ids, self.index)):
            d = {"series": item, "timestamp": idx, "mean": mean[i]}
            d.update({k: v[i] for k, v in qs.items()})
            rows.append(pd.DataFrame(d))
        return pd.concat(rows, ignore_index=True)

    def plot(self, entries: Sequence[TimeSeries], path: Any = None, *, max_series: int = 6, history: int | None = None):
        """Fan charts (median, 50 % and 90 % bands) over the recent history; saved if ``path``."""
        from .plots import fan_chart

        return fan_chart(self, entries, path, max_series=max_series, history=history)


class TSDiff:
    """Forecasting, refinement and synthesis with a trained TSDiff model.

    Args:
        module: a :class:`workbench.lit.DiffusionModule` with a DDPM process and eps prediction.
        context_length, prediction_length: C and P of the windows it was trained on.
        freq: the data frequency (for the lags); ``use_lags`` as in training.
    """

    def __init__(self, module: Any, *, context_length: int, prediction_length: int, freq: str,
                 use_lags: bool = True) -> None:
        self.module = module
        self.C, self.P, self.freq = int(context_length), int(prediction_length), freq
        self.lags = lags_for_freq(freq) if use_lags else []

    @classmethod
    def from_datamodule(cls, module: Any, dm: Any) -> "TSDiff":
        dm.setup("fit")
        return cls(module, context_length=dm.context_length, prediction_length=dm.prediction_length,
                   freq=dm.dataset.freq, use_lags=dm.use_lags)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # -- observations ------------------------------------------------------------------------------
    def observe(self, entries: Sequence[TimeSeries], missing: Missing | None = None, n_missing: int = 168,
                seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled windows of the last C + P steps with the horizon hidden: ``y [N, L, ch]``,
        the observation mask (1 = observed; 0 on the horizon, on missing values and on hidden context
        steps) and ``scale [N]``."""
        rng = np.random.default_rng(seed)
        L = self.C + self.P
        ys, ms, ss = [], [], []
        for s in entries:
            if len(s) < L:
                raise ValueError(f"series {s.item_id!r} has {len(s)} points; forecasting needs context + "
                                 f"prediction = {L}")
            past = s.target[: len(s) - self.P].copy()
            if missing is not None:
                pos = missing_positions(missing, self.C, n_missing, rng)
                past[len(past) - self.C + pos] = np.nan
            x, m, sc = window(past, len(s), L, self.lags, self.C)
            ys.append(x), ms.append(m), ss.append(sc)
        return (torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(ms)),
                torch.tensor(ss, dtype=torch.float32))

    def _index(self, entries: Sequence[TimeSeries]) -> list[Any]:
        return [s.index(len(s) - self.P, self.P) for s in entries]

    def _chunks(self, n: int, num_samples: int, batch_size: int) -> list[slice]:
        per = max(1, batch_size // num_samples)
        return [slice(i, min(i + per, n)) for i in range(0, n, per)]

    # -- predict -------------------------------------------------------------------------------------
    def predict(self, entries: Sequence[TimeSeries], *, guidance: Guidance = "quantile", scale: float = 2.0,
                num_samples: int = 16, sampler: Literal["ddpm", "ddim"] = "ddpm", steps: int | None = None,
                eta: float = 0.0, spacing: str = "time", missing: Missing | None = None, n_missing: int = 168,
                batch_size: int = 64, seed: int = 0, progress: bool = True) -> Forecast:
        """Guided forecasts of the last P steps of each entry.

        Args:
            guidance: ``"quantile"`` (TSDiff-Q) or ``"mse"`` (TSDiff-MS).
            scale: guidance scale s (the paper's per-dataset values are in the configs).
            num_samples: samples per series.
            sampler: ``"ddpm"`` (ancestral, all T steps of the module's discrete process, the
                paper's; ``steps`` must be None) or ``"ddim"`` (``steps`` steps, required, ``eta``,
                uniform or quadratic ``spacing``).
            missing, n_missing: hide ``n_missing`` context steps (RM / BM-B / BM-E).
            batch_size: sequences per network call (whole series per batch).
        """
        import time

        module, dev = self.module, self.device
        process = module.process
        y_all, m_all, sc_all = self.observe(entries, missing, n_missing, seed)
        n = len(entries)
        out = np.zeros((n, num_samples, self.P), dtype=np.float32)
        if sampler == "ddpm":
            if not isinstance(getattr(process, "steps", None), int):
                raise ValueError(f"sampler='ddpm' runs the T steps of a discrete process (DiscreteDDPM); "
                                 f"{type(process).__name__} has none: use sampler='ddim' with steps=<n>")
            if steps is not None:
                raise ValueError(f"sampler='ddpm' runs all {process.steps} steps of the process; steps={steps} "
                                 "applies to sampler='ddim'")
        elif sampler == "ddim":
            if steps is None:
                raise ValueError("sampler='ddim' needs steps=<n> (the paper's ancestral sampler is sampler='ddpm')")
        else:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        if guidance not in ("quantile", "mse"):
            raise ValueError(f"guidance must be 'quantile' or 'mse', got {guidance!r}")
        factory = SelfGuidanceFactory(scale=scale, energy=guidance)
        g = torch.Generator(device=dev).manual_seed(seed)
        nfe = 0
        t0 = time.perf_counter()
        was = module.training
        module.eval()
        chunks = self._chunks(n, num_samples, batch_size)
        try:
            for sl in tqdm(chunks, desc=f"TSDiff-{'Q' if guidance == 'quantile' else 'MS'} ({sampler})",
                           disable=not progress):
                k = sl.stop - sl.start
                y = y_all[sl].repeat_interleave(num_samples, 0).to(dev)
                m = m_all[sl].repeat_interleave(num_samples, 0).to(dev)
                q = quantile_levels(k, num_samples, dev) if guidance == "quantile" else None
                # the guided denoiser comes from the core's self_guidance factory (config group guidance)
                guided = factory(module.denoiser, observation_batch(y, m, q), generator=g)
                geometry = module.geometry.bind(None)
                x = process.prior_sample(y, geometry, generator=g)
                if sampler == "ddpm":   # the step form of the same guidance (its energy and scale)
                    ts = process.time_grid(process.steps - 1, device=dev)
                    x0 = sample_self_guided_ddpm(guided.denoiser, x, ts, process=process, geometry=geometry,
                                                 energy=guided.energy, scale=guided.scale, generator=g)
                    nfe = 2 * (len(ts) - 1) + 1
                else:
                    ts = process.time_grid(steps, spacing=spacing, device=dev)
                    x0 = sample_ddim(guided, x, ts, process=process, geometry=geometry, eta=eta, generator=g)
                    nfe = len(ts)
                if not torch.isfinite(x0).all():
                    raise FloatingPointError(
                        f"guided sampling diverged (non-finite values) for series {entries[sl.start].item_id!r}..; "
                        f"the model may be undertrained or the guidance scale ({scale:g}) too large for "
                        f"{guidance!r} guidance")
                fc = x0[:, self.C:, 0].reshape(k, num_samples, self.P) * sc_all[sl, None, None].to(dev)
                out[sl] = fc.detach().cpu().numpy()
        finally:
            module.train(was)
        secs = time.perf_counter() - t0
        info = dict(method=f"TSDiff-{'Q' if guidance == 'quantile' else 'MS'}", sampler=sampler, scale=scale,
                    num_samples=num_samples, nfe=nfe, backward_passes=nfe // 2 if sampler == "ddpm" else nfe - 1,
                    seconds=secs, seconds_per_series=secs / max(n, 1), missing=missing)
        return Forecast(out, [s.item_id for s in entries], self._index(entries), info)

    # -- refine ----------------------------------------------------------------------------------------
    def best_diffusion_step(self, batch: Tensor, mask: Tensor | None = None, seed: int = 0) -> int:
        """TSDiff's fixed refinement step: the step whose denoising loss on ``batch`` (scaled
        training windows ``[B, L, ch]``) is closest to the mean loss over all steps."""
        module, process = self.module, self.module.process
        T = process.steps
        g = torch.Generator(device=self.device).manual_seed(seed)
        x = batch.to(self.device)
        geometry = module.geometry.bind(mask.to(self.device) if mask is not None else None)
        losses = []
        with torch.no_grad():
            for i in range(T):
                t = torch.full((x.shape[0],), (i + 1) / T, device=self.device)
                eps = geometry.randn_like(x, generator=g)
                xt = process.marginal(x, t, eps, geometry)
                p = module.denoiser(xt, t, geometry)
                losses.append(float(geometry.reduce((p.eps - eps) ** 2).mean()))
        losses_np = np.array(losses)
        return int(np.argmin(np.abs(losses_np - losses_np.mean())))

    def refine(self, entries: Sequence[TimeSeries], base: Forecast | np.ndarray, *, method: Literal["ml", "lmc"] = "ml",
               guidance: Guidance = "quantile", iterations: int = 20, step_size: float = 0.1, noise_scale: float = 0.1,
               weight: float = 1.0, step: int | None = None, num_samples: int = 16, batch_size: int = 64,
               seed: int = 0, progress: bool = True) -> Forecast:
        """Refine base forecasts with the model as a prior (TSDiff Sec. 3.2).

        E(y) = sum_entries (eps_theta(x_tau, tau) - eps)^2 with x_tau = alpha y + sigma eps (fresh
        eps each iteration) + weight * R(y), R = squared error on the observed context
        (``"mse"``) or the pinball loss on every entry against the observation whose horizon is
        the sorted base samples matched to levels k / (N + 1) (``"quantile"``).
        ``"ml"``: y <- y - step_size grad E; ``"lmc"``: y <- y - step_size grad E +
        sqrt(2 step_size) noise_scale xi.

        Args:
            base: a :class:`Forecast` or samples ``[N, S, P]`` (S = 1 for point forecasts).
            step: the fixed diffusion step tau (0-based; default: TSDiff's choice from
                :meth:`best_diffusion_step` on the observations).
        """
        import time

        module, process, dev = self.module, self.module.process, self.device
        base_s = base.samples if isinstance(base, Forecast) else np.asarray(base)
        if base_s.shape[0] != len(entries) or base_s.shape[-1] != self.P:
            raise ValueError(f"base forecasts must be [N={len(entries)}, S, P={self.P}], got {base_s.shape}")
        if base_s.shape[1] == 1:
            base_s = np.repeat(base_s, num_samples, 1)
        elif base_s.shape[1] != num_samples:
            idx = np.linspace(0, base_s.shape[1] - 1, num_samples).round().astype(int)
            base_s = np.sort(base_s, 1)[:, idx]
        base_s = np.sort(base_s, 1)
        y_all, m_all, sc_all = self.observe(entries)
        if step is None:
            step = self.best_diffusion_step(y_all[: min(len(entries), 64)], m_all[: min(len(entries), 64)], seed)
        n = len(entries)
        out = np.zeros((n, num_samples, self.P), dtype=np.float32)
        g = torch.Generator(device=dev).manual_seed(seed)
        t0 = time.perf_counter()
        was = module.training
        module.eval()
        try:
            for sl in tqdm(self._chunks(n, num_samples, batch_size), desc=f"refine ({method}, {guidance})",
                           disable=not progress):
                k = sl.stop - sl.start
                obs = y_all[sl].repeat_interleave(num_samples, 0).to(dev)
                m = m_all[sl].repeat_interleave(num_samples, 0).to(dev)
                sc = sc_all[sl].repeat_interleave(num_samples).to(dev)
                init = torch.from_numpy(base_s[sl].reshape(k * num_samples, self.P)).to(dev) / sc[:, None]
                obs[:, self.C:, 0] = init
                y = obs.clone()
                geometry = module.geometry.bind(None)
                if guidance == "quantile":
                    reg = observation_energy(obs, torch.ones_like(m), "quantile", quantile_levels(k, num_samples, dev))
                else:
                    reg = observation_energy(obs, m, "mse")
                t = torch.full((y.shape[0],), (step + 1) / process.steps, device=dev)
                for _ in range(iterations):
                    with torch.enable_grad():
                        yg = y.detach().requires_grad_(True)
                        eps = geometry.randn_like(yg, generator=g)
                        p = module.denoiser(process.marginal(yg, t, eps, geometry), t, geometry)
                        energy = ((p.eps - eps) ** 2).sum() + weight * reg(yg).sum()
                        (grad,) = torch.autograd.grad(energy, [yg])
                    y = y - step_size * grad
                    if method == "lmc":
                        y = y + math.sqrt(2 * step_size) * noise_scale * geometry.randn_like(y, generator=g)
                    elif method != "ml":
                        raise ValueError(f"method must be 'ml' or 'lmc', got {method!r}")
                fc = y[:, self.C:, 0] * sc[:, None]
                out[sl] = fc.reshape(k, num_samples, self.P).detach().cpu().numpy()
        finally:
            module.train(was)
        secs = time.perf_counter() - t0
        info = dict(method=f"refine-{method}-{guidance}", iterations=iterations, step=step, step_size=step_size,
                    seconds=secs, seconds_per_series=secs / max(n, 1))
        return Forecast(out, [s.item_id for s in entries], self._index(entries), info)

    # -- synthesize --------------------------------------------------------------------------------------
    def synthesize(self, n: int, *, batch_size: int = 256, seed: int = 0, progress: bool = True) -> np.ndarray:
        """``[n, C + P]`` unconditional windows (mean-scaled units), ancestral DDPM sampling."""
        module, process, dev = self.module, self.module.process, self.device
        g = torch.Generator(device=dev).manual_seed(seed)
        out = []
        ch = 1 + len(self.lags)
        for i in tqdm(range(0, n, batch_size), desc="synthesize", disable=not progress):
            b = min(batch_size, n - i)
            template = {"x": torch.zeros(b, self.C + self.P, ch)}
            x = module.sample(template, sampler=partial(sample_ddim, eta=1.0), steps=process.steps - 1, generator=g)
            out.append(x[..., 0].cpu().numpy())
        return np.concatenate(out)


def linear_predictive_score(synthetic: np.ndarray, entries: Sequence[TimeSeries], context_length: int,
                            prediction_length: int) -> dict[str, float]:
    """LPS (TSDiff Sec. 5.3): fit the ridge forecaster on synthetic windows ``[n, C + P]`` (no
    scaling: they are in mean-scaled units), forecast the last P points of the real ``entries``
    from their mean-scaled context, and score the point forecast (CRPS = mean wQL, ND, NRMSE)."""
    f = RidgeForecaster(context_length, prediction_length, scaling=False).fit_windows(synthetic)
    f.scaling = True  # real contexts are scaled at prediction time, forecasts scaled back
    samples = f.predict(entries)
    target = np.stack([s.target[len(s) - prediction_length:] for s in entries])
    return forecast_metrics(samples, target)



def forecast_task(module: Any, datamodule: Any, run_dir: Any, *, guidance: Guidance = "quantile", scale: float = 2.0,
                  num_samples: int = 16, sampler: Literal["ddpm", "ddim"] = "ddpm", steps: int | None = None,
                  split: Literal["test", "val"] = "test", max_series: int | None = None, batch_size: int = 64,
                  baselines: bool = True, seed: int = 0) -> dict[str, float]:
    """The evaluation run by ``workbench evaluate`` (config key ``task``): guided forecasts of
    the test (or validation) windows, written as ``forecasts.csv`` and a fan chart, scored by
    CRPS / ND / NRMSE, with the seasonal-naive baseline alongside."""
    from pathlib import Path

    from workbench.data import atomic_write

    from .baselines import seasonal_naive

    from workbench.errors import ConfigError, DataError, check_int, check_number

    if guidance not in ("quantile", "mse"):
        raise ConfigError(f"config key 'task.guidance' must be 'quantile' or 'mse', got {guidance!r}")
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"config key 'task.sampler' must be 'ddpm' or 'ddim', got {sampler!r}")
    if split not in ("test", "val"):
        raise ConfigError(f"config key 'task.split' must be 'test' or 'val', got {split!r}")
    scale = check_number(scale, "task.scale", minimum=0)
    num_samples = check_int(num_samples, "task.num_samples", minimum=1)
    batch_size = check_int(batch_size, "task.batch_size", minimum=1)
    steps = check_int(steps, "task.steps", minimum=1, allow_none=True)
    max_series = check_int(max_series, "task.max_series", minimum=1, allow_none=True)
    datamodule.setup("fit")
    entries = list(datamodule.dataset.test if split == "test" else datamodule.val_series)
    if not entries:
        if split == "val":
            raise ConfigError("task.split=val, but there are no validation windows (datamodule.val_windows is 0, or "
                              "every train series is too short to give one up)")
        raise DataError("no test series to forecast", file=datamodule.dataset.source or datamodule.dataset.name)
    if max_series is not None:
        entries = entries[:max_series]
    model = TSDiff.from_datamodule(module, datamodule)
    fc = model.predict(entries, guidance=guidance, scale=scale, num_samples=num_samples, sampler=sampler,
                       steps=steps, batch_size=batch_size, seed=seed, progress=False)
    run_dir = Path(run_dir)
    with atomic_write(run_dir / "forecasts.csv") as fh:
        fc.to_frame().to_csv(fh, index=False)
    fc.plot(entries, run_dir / "plots" / "forecasts.png")
    tag = fc.info["method"]
    out = {f"{tag}/{k}": v for k, v in fc.metrics(entries).items() if k in ("CRPS", "ND", "NRMSE")}
    out[f"{tag}/seconds_per_series"] = fc.info["seconds_per_series"]
    if baselines:
        sn = Forecast(seasonal_naive(entries, model.P), fc.item_ids, fc.index, {"method": "seasonal_naive"})
        out.update({f"seasonal_naive/{k}": v for k, v in sn.metrics(entries).items() if k in ("CRPS", "ND", "NRMSE")})
    return out

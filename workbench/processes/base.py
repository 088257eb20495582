"""The forward-process contract shared by every diffusion / flow family.

All processes here are *affine Gaussian*: given data ``x0`` and noise ``eps ~ N(0, I)``,

    x_t = alpha(t) * x0 + sigma(t) * eps,      t in [t_eps, t_max]

with ``t = t_max`` the prior end. From ``alpha`` and ``sigma`` (and their time
derivatives) follow the SDE drift ``f(t) = alpha'/alpha`` and diffusion
``g(t)^2 = d(sigma^2)/dt - 2 f sigma^2`` (Song et al. 2021, Eq. 5 and App. B),
the probability-flow ODE velocity ``alpha' x0 + sigma' eps`` and the
log-SNR ``lambda = log(alpha / sigma)`` used by DPM-Solver. A subclass
overrides only ``alpha``, ``sigma``, ``d_alpha``, ``d_sigma`` (and, where the
family has one, its training-time distribution and sampling grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from ..geometry import Geometry
from ..state import State, keys_of, tree_map

__all__ = ["Coefficients", "Process", "transition_variance", "posterior_variance"]


@dataclass
class Coefficients:
    """Process coefficients at time t; each field is a Tensor or (joint processes) a dict of Tensors.

    Fields are per-sample ``[B]`` from :meth:`Process.coefficients` (per-element noise schedules:
    ``[B, *K]``, e.g. ``[B, C]`` per channel, see :class:`~workbench.processes.PerChannelProcess`),
    or already broadcast to the state's shapes from :meth:`Process.at`. Everything derived here is
    elementwise, so it holds per element as well.
    """

    alpha: Any
    sigma: Any
    d_alpha: Any
    d_sigma: Any

    @property
    def f(self) -> Any:
        """Drift coefficient f(t) = alpha'/alpha of the forward SDE dx = f x dt + g dW."""
        return tree_map(lambda a, da: da / a, self.alpha, self.d_alpha)

    @property
    def g2(self) -> Any:
        """Squared diffusion g(t)^2 = 2 sigma sigma' - 2 f sigma^2."""
        return tree_map(
            lambda a, s, da, ds: 2.0 * s * ds - 2.0 * (da / a) * s * s,
            self.alpha, self.sigma, self.d_alpha, self.d_sigma,
        )

    @property
    def log_snr(self) -> Any:
        """lambda(t) = log(alpha / sigma) (half log-SNR, DPM-Solver's time variable)."""
        return tree_map(lambda a, s: torch.log(a) - torch.log(s), self.alpha, self.sigma)


def transition_variance(ct: Coefficients, cs: Coefficients) -> Any:
    """sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2: the variance of x_t given x_s
    (s < t) under the forward process (per variable for joint processes; clamped at 0)."""
    return tree_map(lambda a_t, s_t, a_s, s_s: (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0),
                    ct.alpha, ct.sigma, cs.alpha, cs.sigma)


def posterior_variance(ct: Coefficients, cs: Coefficients) -> Any:
    """Variance of q(x_s | x_t, x0) = (sigma_s / sigma_t)^2 sigma_{t|s}^2: the DDPM posterior
    (Ho et al. 2020, Eq. 7), generalised to any affine Gaussian process."""
    return tree_map(lambda v, s_t, s_s: (s_s / s_t) ** 2 * v, transition_variance(ct, cs), ct.sigma, cs.sigma)


def _std_like(s: Any, v: Tensor) -> Any:
    """A prior std (float, or a tensor ``[1, *K]``) broadcastable to ``v`` (trailing dims appended)."""
    if not torch.is_tensor(s):
        return s
    return s.to(device=v.device, dtype=v.dtype).reshape(*s.shape, *([1] * (v.ndim - s.ndim)))


class Process:
    """Base class of forward processes (see module docstring).

    Args:
        t_eps: smallest training time (avoids the singular end of the SDE).
        t_end: time at which samplers stop (noise removal happens there).
        t_max: prior time.
    """

    #: whether the reverse SDE (Euler–Maruyama, predictor–corrector) is defined
    stochastic: bool = True

    def __init__(self, t_eps: float = 1e-5, t_end: float = 1e-3, t_max: float = 1.0) -> None:
        if not (0 <= t_eps < t_max and 0 <= t_end < t_max):
            raise ValueError(f"need 0 <= t_eps, t_end < t_max; got {t_eps}, {t_end}, {t_max}")
        self.t_eps, self.t_end, self.t_max = float(t_eps), float(t_end), float(t_max)

    # -- formulas (override) ------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def net_time(self, t: Tensor) -> Tensor:
        """The time value handed to the network (``t`` unless a family prefers another)."""
        return t

    # -- derived ------------------------------------------------------------------
    def coefficients(self, t: Tensor) -> Coefficients:
        """Per-sample coefficients at ``t`` (``[B]``). A process with per-element schedules returns
        ``[B, *K]`` instead, which :meth:`at` broadcasts by ``geometry.expand``'s rule (trailing
        singleton dims appended)."""
        return Coefficients(self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t))

    def at(self, t: Tensor | float, x: State, geometry: Geometry) -> Coefficients:
        """Coefficients at ``t`` broadcast through ``geometry`` to the shapes of ``x``."""
        t = self._batch_t(t, x)
        c = self.coefficients(t)
        return Coefficients(*(geometry.expand(v, x) for v in (c.alpha, c.sigma, c.d_alpha, c.d_sigma)))

    def marginal(self, x0: State, t: Tensor, noise: State, geometry: Geometry) -> State:
        """Sample of x_t given x0 and standard noise: alpha(t) x0 + sigma(t) eps."""
        c = self.at(t, x0, geometry)
        return tree_map(lambda x, a, s, e: a * x + s * e, x0, c.alpha, c.sigma, noise)

    def sample_t(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        """Training times ``[n]``: uniform on [t_eps, t_max]."""
        u = torch.rand(n, generator=generator, device=device)
        return self.t_eps + (self.t_max - self.t_eps) * u

    def time_grid(self, steps: int, *, spacing: str = "time", device: torch.device | str = "cpu") -> Tensor:
        """``steps + 1`` decreasing times from t_max to t_end, in float64.

        Args:
            spacing: ``"time"`` (uniform in t, Song et al.), ``"logsnr"`` (uniform in
                lambda = log(alpha / sigma), DPM-Solver's recommendation for few steps),
                ``"karras"`` (the noise-to-signal ratio sigma / alpha spaced as EDM's Eq. 5 with
                rho = 7 between its values at t_max and t_end) or ``"quadratic"`` (uniform in
                sqrt(t), denser near the data, DDIM's option).

        The grid is float64 (float32 on MPS, which has no float64) so that a grid time is the
        intended time exactly (a discrete DDPM step, say); samplers pass it on to the denoiser,
        which casts it to the state's dtype.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if spacing == "time":
            grid = torch.linspace(self.t_max, self.t_end, steps + 1, dtype=torch.float64)
        elif spacing == "quadratic":
            grid = torch.linspace(self.t_max**0.5, self.t_end**0.5, steps + 1, dtype=torch.float64) ** 2
        elif spacing in ("logsnr", "karras"):
            grid = self._level_grid(steps, spacing)
        else:
            raise ValueError(f"unknown time-grid spacing {spacing!r}; use 'time', 'logsnr', 'karras' or 'quadratic'")
        return self._grid_to(grid, device)

    @staticmethod
    def _grid_to(grid: Tensor, device: torch.device | str) -> Tensor:
        """A float64 grid moved to ``device`` (float32 on MPS)."""
        device = torch.device(device)
        return grid.to(device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)

    def _lam(self, t: Tensor) -> Tensor:
        lam = self.coefficients(t).log_snr
        return next(iter(lam.values())) if isinstance(lam, Mapping) else lam

    def _level_grid(self, steps: int, spacing: str, rho: float = 7.0) -> Tensor:
        """Times at which the noise level lambda = log(alpha / sigma) follows ``spacing``:
        ``"logsnr"`` (lambda evenly spaced) or ``"karras"`` (sigma / alpha = exp(-lambda)
        evenly spaced in its 1/rho-th power, EDM Eq. 5). lambda is decreasing in t; the times
        are found by bisection in float64."""
        hi_t = torch.tensor([self.t_max], dtype=torch.float64)
        lam_lo = self._lam(hi_t)
        first_inf = not torch.isfinite(lam_lo).item()
        if first_inf:  # alpha(t_max) = 0 (interpolants): space the rest from just below t_max
            hi_t = torch.tensor([self.t_max - 1e-3 * (self.t_max - self.t_end)], dtype=torch.float64)
            lam_lo = self._lam(hi_t)
        lam_hi = self._lam(torch.tensor([self.t_end], dtype=torch.float64))
        n = steps if first_inf else steps + 1
        u = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        if spacing == "logsnr":
            targets = float(lam_lo) + u * (float(lam_hi) - float(lam_lo))
        else:
            r_hi, r_lo = math.exp(-float(lam_lo) / rho), math.exp(-float(lam_hi) / rho)
            targets = -rho * torch.log(r_hi + u * (r_lo - r_hi))
        lo = torch.full_like(targets, self.t_end)
        hi = torch.full_like(targets, float(hi_t))
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            above = self._lam(mid) > targets  # still too little noise: move later in time
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        grid = 0.5 * (lo + hi)
        grid[0], grid[-1] = float(hi_t), self.t_end
        if first_inf:
            grid = torch.cat([torch.tensor([self.t_max], dtype=torch.float64), grid])
        return grid

    def prior_std(self) -> Any:
        """Standard deviation of the prior N(0, prior_std^2 I) at t_max: a float, or (per-element
        schedules) a tensor ``[1, *K]`` broadcast like the coefficients (trailing dims appended)."""
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def prior_sample(self, template: State, geometry: Geometry,
                     generator: torch.Generator | None = None) -> State:
        """Draw x_T from the prior with the shapes (and masks) of ``template``."""
        z = geometry.randn_like(template, generator=generator)
        return tree_map(lambda v, s: v * _std_like(s, v), z, self.prior_std())

    def prior_logp(self, x: State, geometry: Geometry) -> Tensor:
        """log N(x; 0, prior_std^2 I) per sample ``[B]`` over the geometry's free dimensions.

        With a per-element prior std the free dimensions are spread evenly over the existing
        entries: the normaliser is ``dims * mean(log(2 pi std^2))`` (exact in Euclidean space and
        when a constraint removes as many dimensions from every channel, as zero centre of mass
        over a channel-last coordinate axis does)."""
        std = self.prior_std()
        total = 0.0
        for k in keys_of(x):
            v = x if k is None else x[k]
            s = std[k] if isinstance(std, Mapping) else std
            g = geometry if k is None else geometry.part(k)
            if torch.is_tensor(s):
                s2 = _std_like(s, v) ** 2
                log_norm = g.reduce(torch.log(2 * math.pi * s2).expand_as(v), "mean") * g.dims(v)
                total = total + (-0.5 * g.reduce(v * v / s2, "sum") - 0.5 * log_norm)
            else:
                total = total + (-0.5 * g.reduce(v * v, "sum") / s**2
                                 - 0.5 * g.dims(v) * math.log(2 * math.pi * s**2))
        return total

    @staticmethod
    def _batch_t(t: Tensor | float, x: State) -> Tensor:
        ref = next(iter(x.values())) if isinstance(x, Mapping) else x
        if not torch.is_tensor(t):
            t = torch.tensor(float(t))
        t = t.to(device=ref.device, dtype=ref.dtype)
        return t.expand(ref.shape[0]) if t.ndim == 0 else t

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v:g}" for k, v in vars(self).items() if isinstance(v, (int, float)))
        return f"{type(self).__name__}({fields})"

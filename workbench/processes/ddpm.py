"""Discrete-time DDPM schedules (Ho et al. 2020; cosine: Nichol & Dhariwal 2021).

Step i = 1..T lives at time t_i = i / T with alpha(t_i)^2 = prod_{j<=i} (1 - beta_j).
Between grid points log alpha and log sigma^2 are interpolated by monotone piecewise-cubic
Hermite (PCHIP, Fritsch & Carlson 1980) in t: a C1 continuous-time process that is exact on
the grid, with one slope at every grid point, so the ODE, DPM-Solver and SDE samplers also
run on a DDPM-trained model and converge smoothly in the step count (a piecewise-linear
interpolation has one-sided slopes at the grid points). Below t_1 = 1/T (never used by the
samplers, which stop at t_end = t_1) the interpolation is linear to sigma ~ 0 at t = 0.
Training draws t from the grid only; time grids are sets of grid points.
The network receives the step index ``i - 1`` in ``[0, T-1]`` as a float.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .base import Process

__all__ = ["DiscreteDDPM", "make_betas"]


def make_betas(kind: Literal["linear", "cosine"], steps: int, beta_start: float = 1e-4,
               beta_end: float = 0.02, cosine_s: float = 0.008) -> Tensor:
    """Beta schedule ``[T]`` in float64: linear in beta, or the cosine alpha-bar schedule (clipped at 0.999)."""
    if int(steps) != steps or steps < 2:
        raise ValueError(f"a DDPM needs an integer number of steps >= 2, got {steps}")
    if kind == "linear":
        if not (0 < beta_start <= beta_end < 1):
            raise ValueError(f"linear betas need 0 < beta_start <= beta_end < 1 (each step keeps some signal), "
                             f"got beta_start={beta_start:g}, beta_end={beta_end:g}")
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    if kind == "cosine":
        i = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((i + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {kind!r}; use 'linear' or 'cosine'")


class DiscreteDDPM(Process):
    """A DDPM with ``steps`` noise levels.

    Args:
        steps: number of diffusion steps T.
        schedule: ``"linear"`` (beta_start..beta_end) or ``"cosine"``.
    """

    def __init__(self, steps: int = 1000, schedule: Literal["linear", "cosine"] = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        super().__init__(t_eps=1.0 / steps, t_end=1.0 / steps, t_max=1.0)
        self.steps, self.schedule = int(steps), schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.betas = make_betas(schedule, self.steps, beta_start, beta_end)
        abar = torch.cumprod(1 - self.betas, 0)
        zero = torch.zeros(1, dtype=torch.float64)
        self._log_a = torch.cat([zero, 0.5 * torch.log(abar)])            # log alpha at t = i / T
        self._log_s2 = torch.cat([torch.full((1,), -80.0, dtype=torch.float64), torch.log1p(-abar)])
        self._d_log_a, self._d_log_s2 = (_pchip_slopes(tab, self.steps) for tab in (self._log_a, self._log_s2))

    def _index(self, t: Tensor) -> Tensor:
        """``t * T`` in float64, snapped to the nearest integer when ``t`` is a grid time up to
        float32 rounding (so a grid time never lands on the wrong side of its step)."""
        pos = t.double() * self.steps
        r = pos.round()
        return torch.where((pos - r).abs() <= 1e-7 * self.steps, r, pos).clamp(0, self.steps)

    def _interp(self, table: Tensor, slopes: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Value and d/dt of the interpolation of ``table`` (node slopes ``slopes``) at t."""
        tab, d = table.to(t.device), slopes.to(t.device)
        pos = self._index(t)
        lo = pos.floor().clamp(max=self.steps - 1).long()
        u = pos - lo
        y0, y1 = tab[lo], tab[lo + 1]
        h = 1.0 / self.steps
        d0, d1 = d[lo] * h, d[lo + 1] * h  # node slopes per unit of u
        u2, u3 = u * u, u * u * u
        cubic = ((2 * u3 - 3 * u2 + 1) * y0 + (u3 - 2 * u2 + u) * d0
                 + (-2 * u3 + 3 * u2) * y1 + (u3 - u2) * d1)
        dcubic = ((6 * u2 - 6 * u) * (y0 - y1) + (3 * u2 - 4 * u + 1) * d0 + (3 * u2 - 2 * u) * d1) * self.steps
        first = lo == 0  # [0, t_1]: linear
        value = torch.where(first, y0 + u * (y1 - y0), cubic)
        slope = torch.where(first, (y1 - y0) * self.steps, dcubic)
        return value.to(t.dtype), slope.to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self._interp(self._log_a, self._d_log_a, t)[0])

    def d_alpha(self, t: Tensor) -> Tensor:
        v, dv = self._interp(self._log_a, self._d_log_a, t)
        return torch.exp(v) * dv

    def sigma(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(self._log_s2, self._d_log_s2, t)[0])

    def d_sigma(self, t: Tensor) -> Tensor:
        v, dv = self._interp(self._log_s2, self._d_log_s2, t)
        return 0.5 * torch.exp(0.5 * v) * dv

    def prior_std(self) -> float:
        return 1.0

    def net_time(self, t: Tensor) -> Tensor:
        return torch.round(t * self.steps) - 1

    def sample_t(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        i = torch.randint(1, self.steps + 1, (n,), generator=generator, device=device)
        return i.float() / self.steps

    def time_grid(self, steps: int, *, spacing: str = "time", device: torch.device | str = "cpu") -> Tensor:
        """``steps + 1`` distinct grid times i / T from t_T = 1 to t_1, float64.

        The step indices follow ``spacing`` as in :meth:`Process.time_grid` (``"time"``: evenly
        spaced, DDIM's "uniform" skip; ``"quadratic"``: evenly spaced in sqrt(i); ``"logsnr"`` /
        ``"karras"``: by the noise level of the interpolated process) and are rounded to steps;
        where rounding would repeat a step (a dense end of the grid) the nearest unused steps
        are taken, so every ``steps`` in [1, T - 1] gives exactly ``steps + 1`` times.
        """
        if not 1 <= steps <= self.steps - 1:
            raise ValueError(f"steps must be in [1, {self.steps - 1}] for a {self.steps}-step DDPM, got {steps}")
        target = super().time_grid(steps, spacing=spacing) * self.steps
        return self._grid_to(_distinct_steps(target, self.steps).double() / self.steps, device)


def _distinct_steps(target: Tensor, steps: int) -> Tensor:
    """Strictly decreasing integers from ``steps`` to 1, one per entry of the decreasing
    ``target``, each as near its target as distinctness allows."""
    n = len(target)
    j = torch.arange(n, dtype=torch.float64)
    idx = target.double().round()
    idx[0], idx[-1] = steps, 1
    idx = torch.minimum(torch.maximum(idx, n - j), steps - j)  # entry j has j above it and n-1-j below
    for k in range(n - 2, -1, -1):  # push up where rounding repeated a step; upper bounds still hold
        idx[k] = max(idx[k], idx[k + 1] + 1)
    return idx.long()


def _pchip_slopes(table: Tensor, steps: int) -> Tensor:
    """d/dt at the nodes t_i = i / T of the monotone cubic Hermite interpolant of ``table``
    on nodes 1..T (Fritsch-Carlson: harmonic mean of the neighbouring secants, 0 at a local
    extremum; the one-sided three-point formula at the ends). Node 0 gets its linear slope."""
    y = table[1:]
    delta = (y[1:] - y[:-1]) * steps  # secants of the T - 1 intervals
    d = torch.zeros_like(y)
    a, b = delta[:-1], delta[1:]
    same = a * b > 0
    d[1:-1] = torch.where(same, 2 * a * b / torch.where(same, a + b, torch.ones_like(a)), torch.zeros_like(a))
    for end, (s0, s1) in ((0, (delta[0], delta[1])), (-1, (delta[-1], delta[-2]))):
        e = (3 * s0 - s1) / 2
        if e * s0 <= 0:
            e = torch.zeros_like(e)
        elif s0 * s1 < 0 and e.abs() > 3 * s0.abs():
            e = 3 * s0
        d[end] = e
    return torch.cat([(table[1:2] - table[:1]) * steps, d])

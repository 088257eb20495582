"""Discrete-time DDPM schedules (Ho et al. 2020; cosine: Nichol & Dhariwal 2021).

Step i = 1..T lives at time t_i = i / T with alpha(t_i)^2 = prod_{j<=i} (1 - beta_j).
Between grid points log alpha and log sigma^2 are interpolated linearly in t, which
gives a continuous process that is exact on the grid, so the ODE and DPM-Solver
samplers also run on a DDPM-trained model. Training draws t from the grid only.
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
    if kind == "linear":
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

    def _interp(self, table: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Value and slope (d/dt) of the piecewise-linear interpolation of ``table`` at t."""
        tab = table.to(t.device)
        pos = (t.double() * self.steps).clamp(0, self.steps)
        lo = pos.floor().clamp(max=self.steps - 1).long()
        w = pos - lo
        slope = (tab[lo + 1] - tab[lo]) * self.steps
        return (tab[lo] + w * (tab[lo + 1] - tab[lo])).to(t.dtype), slope.to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self._interp(self._log_a, t)[0])

    def d_alpha(self, t: Tensor) -> Tensor:
        v, dv = self._interp(self._log_a, t)
        return torch.exp(v) * dv

    def sigma(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(self._log_s2, t)[0])

    def d_sigma(self, t: Tensor) -> Tensor:
        v, dv = self._interp(self._log_s2, t)
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
        """``steps + 1`` grid times from t_T to t_1, evenly spaced in the step index (DDIM's
        "uniform" skip) or, with ``spacing="quadratic"``, in its square root."""
        if spacing not in ("time", "quadratic"):
            raise ValueError(f"a discrete DDPM supports spacing 'time' or 'quadratic', got {spacing!r}")
        if spacing == "quadratic":
            i = torch.linspace(self.steps**0.5, 1.0, steps + 1, dtype=torch.float64) ** 2
            i = torch.unique_consecutive(i.round())
            if len(i) != steps + 1:
                raise ValueError(f"{steps} quadratic steps do not fit a {self.steps}-step DDPM")
            return (i / self.steps).float().to(device)
        if not 1 <= steps <= self.steps - 1:
            raise ValueError(f"steps must be in [1, {self.steps - 1}] for a {self.steps}-step DDPM, got {steps}")
        i = torch.linspace(self.steps, 1, steps + 1, dtype=torch.float64).round()
        return (i / self.steps).float().to(device)

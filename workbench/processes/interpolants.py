"""Stochastic interpolants / flow matching with a Gaussian base (Albergo & Vanden-Eijnden 2023;
Lipman et al. 2023): x_t = alpha(t) x0 + sigma(t) eps, data at t = 0 and noise at t = 1.

Trained with :class:`workbench.losses.FlowMatching` (velocity target alpha' x0 + sigma' eps) and
sampled by integrating the ODE (Euler / Heun), DDIM or DPM-Solver. The reverse SDE's
coefficients blow up at t = 1 for these paths, so the SDE samplers refuse them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process

__all__ = ["LinearInterpolant", "TrigInterpolant"]


class LinearInterpolant(Process):
    """Linear path (rectified flow / conditional OT): alpha = 1 - t, sigma = t."""

    stochastic = False

    def __init__(self, t_eps: float = 0.0, t_end: float = 1e-3, t_max: float = 1.0) -> None:
        super().__init__(t_eps=t_eps, t_end=t_end, t_max=t_max)

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


class TrigInterpolant(LinearInterpolant):
    """Trigonometric path: alpha = cos(pi t / 2), sigma = sin(pi t / 2)."""

    def alpha(self, t: Tensor) -> Tensor:
        # exactly 0 at t = 1 (cos(pi/2) is -4e-8 in float32 and 6e-17 in float64)
        return torch.where(t >= 1, torch.zeros_like(t), torch.cos(0.5 * math.pi * t))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

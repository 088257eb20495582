"""Variance-exploding SDE (Song et al. 2021, Eq. 9): dx = sqrt(d sigma^2/dt) dW."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process

__all__ = ["VE"]


class VE(Process):
    """VE SDE with geometric noise levels sigma(t) = sigma_min (sigma_max / sigma_min)^t, alpha = 1."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_eps: float = 1e-5,
                 t_end: float = 1e-3, t_max: float = 1.0) -> None:
        super().__init__(t_eps=t_eps, t_end=t_end, t_max=t_max)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.sigma(t) * self._log_ratio

"""Variance-preserving SDE (Song et al. 2021, Eq. 11): dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Process

__all__ = ["VP"]


class VP(Process):
    """VP SDE with linear beta(t) = beta_min + t (beta_max - beta_min).

    Marginal: alpha(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2),
    sigma(t) = sqrt(1 - alpha(t)^2).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-5,
                 t_end: float = 1e-3, t_max: float = 1.0) -> None:
        super().__init__(t_eps=t_eps, t_end=t_end, t_max=t_max)
        if not 0 <= beta_min <= beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def d_sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return 0.5 * self.beta(t) * a * a / self.sigma(t)

    def prior_std(self) -> float:
        """N(0, I), the SDE's stationary distribution (Song et al.; GDSS also uses it when
        beta_max is small and the marginal at t = 1 is not yet standard)."""
        return 1.0

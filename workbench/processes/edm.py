"""EDM (Karras et al. 2022): x_sigma = x0 + sigma eps with time t = sigma."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Process

__all__ = ["EDM"]

class EDM(Process):
    """The EDM formulation: alpha = 1, sigma(t) = t on [sigma_min, sigma_max].

    Training draws ln(sigma) ~ N(p_mean, p_std^2) (EDM Table 1); sampling uses
    the rho-spaced grid of EDM Eq. 5. ``sigma_data`` is used by the EDM
    preconditioning (``prediction="edm"`` in :class:`workbench.precond.Denoiser`).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5,
                 rho: float = 7.0, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        super().__init__(t_eps=sigma_min, t_end=sigma_min, t_max=sigma_max)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.rho, self.p_mean, self.p_std = float(rho), float(p_mean), float(p_std)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def net_time(self, t: Tensor) -> Tensor:
        return torch.log(t) / 4

    def sample_t(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, generator=generator, device=device)
        return torch.exp(self.p_mean + self.p_std * z).clamp(self.sigma_min, self.sigma_max)

    def time_grid(self, steps: int, *, spacing: str = "karras", device: torch.device | str = "cpu") -> Tensor:
        """EDM's rho-spaced grid (Eq. 5, in closed form, with this process's ``rho``) by default;
        other spacings as in :meth:`Process.time_grid`. float64 like the base class's grids."""
        if spacing != "karras":
            return super().time_grid(steps, spacing=spacing, device=device)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        i = torch.arange(steps + 1, dtype=torch.float64) / steps
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return self._grid_to((hi + i * (lo - hi)) ** self.rho, device)

    def prior_std(self) -> float:
        return self.sigma_max


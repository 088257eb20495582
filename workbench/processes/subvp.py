"""Sub-VP SDE (Song et al. 2021, Eq. 12): variance bounded by the VP SDE's."""
from __future__ import annotations

import torch
from torch import Tensor

from .vp import VP

__all__ = ["SubVP"]


class SubVP(VP):
    """sub-VP: same mean as VP, sigma(t) = 1 - alpha(t)^2; g(t)^2 = beta(t) (1 - alpha(t)^4)."""

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return self.beta(t) * a * a

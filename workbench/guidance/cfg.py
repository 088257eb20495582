"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..geometry import Geometry
from ..precond import Prediction
from ..state import State, tree_map
from .base import DenoiserWrapper

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance(DenoiserWrapper):
    """eps = (1 + w) eps(x, t, cond) - w eps(x, t, None) (Ho & Salimans 2022, Eq. 6).

    ``w = 0`` is the conditional model; x0 is recomputed from the guided eps.
    The wrapped denoiser's network must accept ``cond=None`` (the unconditional model).
    """

    def __init__(self, denoiser: nn.Module, scale: float) -> None:
        super().__init__(denoiser)
        self.scale = float(scale)

    def forward(self, x: State, t: Tensor, geometry: Geometry, cond: Any = None, **extras: Any) -> Prediction:
        pc = self.denoiser(x, t, geometry, cond=cond, **extras)
        if cond is None or self.scale == 0:
            return pc
        pu = self.denoiser(x, t, geometry, cond=None, **extras)
        w = self.scale
        eps = tree_map(lambda ec, eu: (1 + w) * ec - w * eu, pc.eps, pu.eps)
        return Prediction.from_eps(x, eps, pc.coef)

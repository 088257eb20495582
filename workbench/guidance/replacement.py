"""Replacement guidance for inpainting / input guidance (Song et al. 2021, App. I.2;
SeisFusion's input guidance): observed entries are re-noised to the current level."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..geometry import Geometry
from ..precond import Prediction
from ..state import State, tree_map

__all__ = ["Replacement"]


class Replacement(nn.Module):
    """Wraps a denoiser so that known entries follow the data.

    At (x_t, t), the network sees ``m * (alpha_t y + sigma_t z) + (1 - m) * x_t`` (observed
    entries replaced by the observation noised to level t, with fresh noise z), and the
    returned prediction has ``x0 = y`` on the observed entries, with ``eps`` consistent with
    the sampler's own x_t there, so any sampler ends on the observations exactly.

    Args:
        denoiser: the unconditional denoiser.
        observed: the observation y (a State shaped like x; values off the mask are ignored).
        mask: 1 where observed, 0 where to generate (a State or a Tensor broadcastable to x).
        generator: for the re-noising noise.
    """

    def __init__(self, denoiser: nn.Module, observed: State, mask: State,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.denoiser, self.observed, self.obs_mask, self.generator = denoiser, observed, mask, generator

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        t = self.denoiser.process._batch_t(t, x)
        c = self.denoiser.process.at(t, x, geometry)
        z = geometry.randn_like(x, generator=self.generator)
        x_in = tree_map(lambda v, y, m, a, s, n: m * (a * y + s * n) + (1 - m) * v,
                        x, self.observed, self.obs_mask, c.alpha, c.sigma, z)
        p = self.denoiser(x_in, t, geometry, **extras)
        x0 = tree_map(lambda x0, y, m: m * y + (1 - m) * x0, p.x0, self.observed, self.obs_mask)
        eps = tree_map(lambda e, v, y, m, a, s: m * (v - a * y) / s + (1 - m) * e,
                       p.eps, x, self.observed, self.obs_mask, c.alpha, c.sigma)
        return Prediction(x0, eps, p.coef)

"""Replacement guidance for inpainting / input guidance (Song et al. 2021, App. I.2;
SeisFusion's input guidance): observed entries are re-noised to the current level."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..geometry import Geometry, align_mask
from ..precond import Prediction
from ..state import State, tree_map
from .base import DenoiserWrapper

__all__ = ["Replacement"]


class Replacement(DenoiserWrapper):
    """Wraps a denoiser so that observed entries follow the data.

    At (x_t, t), the network sees ``m * (alpha_t y + sigma_t z) + (1 - m) * x_t`` (observed
    entries replaced by the observation noised to level t, with fresh noise z), and the
    returned prediction has ``x0 = y`` on the observed entries, with ``eps`` consistent with
    the sampler's own x_t there, so any sampler ends on the observations exactly.

    Args:
        denoiser: the unconditional denoiser (or another wrapper).
        observed: the observation y (a State shaped like x; values off the mask are ignored).
        obs_mask: the observation mask, 1 where observed, 0 where to generate: a State, or a
            Tensor applied to every variable, aligned to the state by the geometry module's
            mask rule (``[B, *S]``, ``[B, *items]``, ``[B, *trailing]`` or with size-1 dims, e.g.
            ``[B, D, H, W]`` or ``[B, 1, D, H, W]`` for a volume ``[B, C, D, H, W]``). It is not the
            existence mask ``mask`` of a batch, which the geometry carries.
        generator: for the re-noising noise.
    """

    def __init__(self, denoiser: nn.Module, observed: State, obs_mask: State,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(denoiser)
        self.observed, self.obs_mask, self.generator = observed, obs_mask, generator

    def _masks(self, x: State) -> State:
        m = self.obs_mask
        if isinstance(x, Mapping):
            return {k: align_mask(m[k] if isinstance(m, Mapping) else m, v, f"obs_mask[{k!r}]") for k, v in x.items()}
        if isinstance(m, Mapping):
            raise TypeError("Replacement: a dict obs_mask needs a dict state")
        return align_mask(m, x, "obs_mask")

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        t = self.process._batch_t(t, x)
        c = self.process.at(t, x, geometry)
        masks = self._masks(x)
        z = geometry.randn_like(x, generator=self.generator)
        x_in = geometry.project(tree_map(lambda v, y, m, a, s, n: m * (a * y + s * n) + (1 - m) * v,
                                         x, self.observed, masks, c.alpha, c.sigma, z))
        p = self.denoiser(x_in, t, geometry, **extras)
        x0 = tree_map(lambda x0, y, m: m * y + (1 - m) * x0, p.x0, self.observed, masks)
        eps = tree_map(lambda e, v, y, m, a, s: m * (v - a * y) / s + (1 - m) * e,
                       p.eps, x, self.observed, masks, c.alpha, c.sigma)
        return Prediction(x0, eps, p.coef)

"""Diffusion posterior sampling (Chung et al. 2023, Alg. 1) as a denoiser wrapper."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..geometry import Geometry
from ..precond import Prediction
from ..state import State, tree_map
from .base import DenoiserWrapper, maybe_detach, needs_graph

__all__ = ["DPS"]


class DPS(DenoiserWrapper):
    """Guides the score with -zeta grad_x ||y - A(x0_hat(x_t))|| (Chung et al. 2023, Alg. 1).

    The correction is folded into the prediction as score' = score - zeta * grad (the gradient
    is taken through the denoiser), so it works with every sampler; the effective step per
    sampler step is zeta times that sampler's score step size (sigma_{t|s}^2 for the
    reverse-diffusion predictor). ``zeta`` is tuned per problem.

    Args:
        denoiser: the unconditional denoiser (or another wrapper).
        operator: ``A(x0) -> y`` (differentiable).
        y: the measurement.
        zeta: step size.
        squared: use ||.||^2 instead of ||.|| (the Gaussian-likelihood variant).
    """

    def __init__(self, denoiser: nn.Module, operator: Callable[[State], Tensor], y: Tensor,
                 zeta: float = 1.0, squared: bool = False) -> None:
        super().__init__(denoiser)
        self.operator, self.y = operator, y
        self.zeta, self.squared = float(zeta), bool(squared)

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        outer = needs_graph(x)
        with torch.enable_grad():
            xg = x if outer else tree_map(lambda v: v.detach().requires_grad_(True), x)
            p = self.denoiser(xg, t, geometry, **extras)
            r = (self.y - self.operator(p.x0)).flatten(1)
            norm = (r * r).sum(1) if self.squared else r.norm(dim=1)
            leaves = [xg] if torch.is_tensor(xg) else list(xg.values())
            grads = torch.autograd.grad(norm.sum(), leaves, create_graph=outer)
        grad = geometry.project_tangent(grads[0] if torch.is_tensor(x) else dict(zip(x.keys(), grads)))
        c = p.coef
        # score' = score - zeta * grad  <=>  eps' = eps + sigma * zeta * grad
        eps = tree_map(lambda e, g, s: e + s * self.zeta * g, maybe_detach(p.eps, outer), grad, c.sigma)
        return Prediction.from_eps(x, eps, c)

"""Diffusion posterior sampling (Chung et al. 2023, Alg. 1) as a denoiser wrapper."""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from ..geometry import Geometry
from ..precond import Prediction
from ..state import State, tree_map
from .base import DenoiserWrapper, maybe_detach, needs_graph

__all__ = ["DPS", "apply_operator"]

Energy = Literal["norm", "squared", "gaussian"]


def apply_operator(operator: Any, x: State) -> Tensor:
    """``A(x)``: ``operator.forward(x)`` for a :class:`~workbench.operators.ForwardOperator`
    (anything with ``forward`` and ``adjoint``), else ``operator(x)`` for a plain callable."""
    if hasattr(operator, "forward") and hasattr(operator, "adjoint"):
        return operator.forward(x)
    return operator(x)


class DPS(DenoiserWrapper):
    """Guides the score with -zeta grad_x E(y, A(x0_hat(x_t))) (Chung et al. 2023, Alg. 1).

    The correction is folded into the prediction as score' = score - zeta * grad (the gradient
    is taken through the denoiser), so it works with every sampler; the effective step per
    sampler step is zeta times that sampler's score step size (sigma_{t|s}^2 for the
    reverse-diffusion predictor). ``zeta`` is tuned per problem.

    Args:
        denoiser: the unconditional denoiser (or another wrapper).
        operator: a :class:`~workbench.operators.ForwardOperator` (its ``forward`` is A and its
            ``noise_std`` the measurement noise level), or any differentiable ``A(x0) -> y``.
        y: the measurement.
        zeta: step size.
        squared: use ||.||^2 instead of ||.|| (the Gaussian-likelihood variant); kept for
            callers of the original signature, ``energy`` says the same and more.
        energy: ``"norm"`` ||y - A x0|| (Chung et al.'s Alg. 1), ``"squared"`` ||y - A x0||^2, or
            ``"gaussian"`` ||y - A x0||^2 / (2 noise_std^2), the negative Gaussian log-likelihood
            at the operator's ``noise_std`` (which must then be > 0). Default: from ``squared``.
    """

    def __init__(self, denoiser: nn.Module, operator: Callable[[State], Tensor] | Any, y: Tensor,
                 zeta: float = 1.0, squared: bool = False, energy: Energy | None = None) -> None:
        super().__init__(denoiser)
        self.operator, self.y = operator, y
        self.zeta = float(zeta)
        self.energy = energy or ("squared" if squared else "norm")
        if self.energy not in ("norm", "squared", "gaussian"):
            raise ValueError(f"DPS energy must be 'norm', 'squared' or 'gaussian', got {self.energy!r}")
        self.squared = self.energy != "norm"
        self.noise_var = 1.0
        if self.energy == "gaussian":
            std = float(getattr(operator, "noise_std", 0.0) or 0.0)
            if std <= 0:
                raise ValueError("DPS energy 'gaussian' needs an operator with noise_std > 0 "
                                 f"({type(operator).__name__} has noise_std={std:g}); use 'norm' or 'squared'")
            self.noise_var = std * std

    def measurement_energy(self, x0: State) -> Tensor:
        """E(y, A(x0)) per sample ``[B]``."""
        r = self.y - apply_operator(self.operator, x0)
        r = r.flatten(1)
        if r.is_complex():
            r = torch.view_as_real(r).flatten(1)
        if self.energy == "norm":
            return r.norm(dim=1)
        e = (r * r).sum(1)
        return e / (2 * self.noise_var) if self.energy == "gaussian" else e

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        outer = needs_graph(x)
        with torch.enable_grad():
            xg = x if outer else tree_map(lambda v: v.detach().requires_grad_(True), x)
            p = self.denoiser(xg, t, geometry, **extras)
            norm = self.measurement_energy(p.x0)
            leaves = [xg] if torch.is_tensor(xg) else list(xg.values())
            grads = torch.autograd.grad(norm.sum(), leaves, create_graph=outer)
        grad = geometry.project_tangent(grads[0] if torch.is_tensor(x) else dict(zip(x.keys(), grads)))
        c = p.coef
        # score' = score - zeta * grad  <=>  eps' = eps + sigma * zeta * grad
        eps = tree_map(lambda e, g, s: e + s * self.zeta * g, maybe_detach(p.eps, outer), grad, c.sigma)
        return Prediction.from_eps(x, eps, c)

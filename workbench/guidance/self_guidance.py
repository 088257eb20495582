"""Self-guidance of an unconditional model by an energy on its one-step denoised estimate
(Kollovieh et al. 2023, "Predict, Refine, Synthesize", Sec. 3.1 / Alg. 1).

The guide is ``log p(y | x_t) ~ -E(x0_hat(x_t, t))`` with ``x0_hat = (x_t - sigma_t eps) / alpha_t``
and an energy E chosen by the task (squared error or pinball loss on observed entries); its
gradient is taken through the denoiser by autograd.

Two forms:

* :class:`SelfGuidance` wraps the denoiser: eps' = eps + scale * sigma_t * grad E, i.e.
  score' = score - scale * grad E (TSDiff's DDIM guidance). It works with every sampler.
* :func:`sample_self_guided_ddpm` is TSDiff's DDPM guidance (its Alg. 1 as implemented): an
  ancestral step with the unguided model, then ``x <- x - scale * var * grad_x E(x0_hat(x, t))``
  with ``var`` the step's posterior variance, the gradient taken at the new x with the old t.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..geometry import Geometry
from ..precond import Prediction
from ..processes.base import Process, posterior_variance
from ..state import State, tree_map
from ..samplers.common import Callback, PostStep, finish, post, steps
from .base import DenoiserWrapper, maybe_detach, needs_graph

__all__ = ["Energy", "energy_grad", "SelfGuidance", "sample_self_guided_ddpm"]

#: ``energy(x0_hat) -> [B]``: per-sample energy of a denoised estimate (differentiable).
Energy = Callable[[State], Tensor]


def energy_grad(model: Any, x: State, t: Tensor, geometry: Geometry, energy: Energy,
                extra_args: dict | None = None) -> tuple[State, Prediction]:
    """``grad_x E(x0_hat(x, t))`` through the denoiser (a tangent vector), and the prediction.

    The prediction is detached unless ``x`` is already part of an outer gradient computation
    (a wrapper stacked outside), in which case the graph is kept for it.
    """
    extra_args = extra_args or {}
    outer = needs_graph(x)
    with torch.enable_grad():
        xg = x if outer else tree_map(lambda v: v.detach().requires_grad_(True), x)
        pred = model(xg, t, geometry, **extra_args)
        e = energy(pred.x0)
        if e.ndim != 1:
            raise ValueError(f"the energy must be per sample [B], got shape {tuple(e.shape)}")
        leaves = [xg] if torch.is_tensor(xg) else list(xg.values())
        grads = torch.autograd.grad(e.sum(), leaves, create_graph=outer)
    grad = grads[0] if torch.is_tensor(x) else dict(zip(x.keys(), grads))
    kept = Prediction(maybe_detach(pred.x0, outer), maybe_detach(pred.eps, outer), pred.coef)
    return geometry.project_tangent(grad), kept


class SelfGuidance(DenoiserWrapper):
    """Denoiser wrapper: eps' = eps + scale * sigma_t * grad_x E(x0_hat) (TSDiff, DDIM form).

    Args:
        denoiser: the unconditional denoiser (or another wrapper).
        energy: ``E(x0_hat) -> [B]``.
        scale: guidance scale s.
    """

    def __init__(self, denoiser: nn.Module, energy: Energy, scale: float = 1.0) -> None:
        super().__init__(denoiser)
        self.energy, self.scale = energy, float(scale)

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        grad, p = energy_grad(self.denoiser, x, t, geometry, self.energy, extras)
        eps = tree_map(lambda e, g, s: e + s * self.scale * g, p.eps, grad, p.coef.sigma)
        return Prediction.from_eps(x, eps, p.coef)


@torch.no_grad()
def sample_self_guided_ddpm(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
                            energy: Energy, scale: float = 1.0, extra_args: dict | None = None,
                            callback: Callback = None, generator: torch.Generator | None = None,
                            denoise: bool = True, progress: bool = False, post_step: PostStep = None) -> State:
    """TSDiff's observation self-guidance on the ancestral DDPM sampler.

    Each step t -> s: x <- alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z (the DDPM posterior,
    c^2 = posterior variance), then x <- x - scale * c^2 * grad_x E(x0_hat(x, t)).
    NFE = 2 per step (+1 if denoise) and one backward pass per step.
    ``post_step(x, t_next, prediction) -> x`` is applied after every step (after the guidance
    update and the projection) and to the denoised estimate
    (see :data:`~workbench.samplers.common.PostStep`).
    """
    extra_args = extra_args or {}
    for i, t, s in steps(ts, progress, f"self-guided DDPM (scale={scale:g})"):
        pred = model(x, t, geometry, **extra_args)
        ct, cs = pred.coef, process.at(s, x, geometry)
        var = posterior_variance(ct, cs)
        z = geometry.randn_like(x, generator=generator)
        x = tree_map(lambda x0, e, a_s, s_s, v, n: a_s * x0 + (s_s**2 - v).clamp_min(0).sqrt() * e + v.sqrt() * n,
                     pred.x0, pred.eps, cs.alpha, cs.sigma, var, z)
        if scale != 0:
            grad, _ = energy_grad(model, x, t, geometry, energy, extra_args)
            x = tree_map(lambda v, g, w: v - scale * w * g, x, grad, var)
        x = post(post_step, geometry.project(x), s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    return finish(model, x, ts[-1], geometry, extra_args, denoise, post_step)

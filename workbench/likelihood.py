"""Log-likelihood through the probability-flow ODE (Song et al. 2021, App. D.2; Grathwohl et al. 2019).

log p_{t0}(x) = log p_T(x_T) + int_{t0}^{T} div v(x_t, t) dt, where x_t solves the PF-ODE
dx/dt = v(x, t) from x_{t0} = x. The divergence is computed exactly (small dimensions)
or with Hutchinson's estimator E[z^T (dv/dx) z] (Rademacher or Gaussian probes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .geometry import Geometry
from .processes.base import Process
from tqdm.auto import tqdm

from .state import State, tree_map

__all__ = ["LikelihoodOutput", "log_likelihood"]


@dataclass
class LikelihoodOutput:
    """Per-sample results ``[B]``: log-likelihood (nats), its prior and ODE parts, bits/dim; the latent."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    bpd: Tensor
    latent: State
    nfe: int


def _leaves(x: State) -> list[Tensor]:
    return [x] if torch.is_tensor(x) else [x[k] for k in x]


def _divergence(model: Any, x: State, t: Tensor, geometry: Geometry, extra_args: dict,
                estimator: str, probes: list[State] | None) -> tuple[State, Tensor]:
    with torch.enable_grad():
        xg = tree_map(lambda v: v.detach().requires_grad_(True), x)
        v = model(xg, t, geometry, **extra_args).velocity
        leaves_x, leaves_v = _leaves(xg), _leaves(v)
        if estimator == "exact":
            if not torch.is_tensor(x):
                raise ValueError("exact divergence supports Tensor states only; use estimator='hutchinson'")
            flat_v = v.flatten(1)
            div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for j in range(flat_v.shape[1]):
                g = torch.autograd.grad(flat_v[:, j].sum(), xg, retain_graph=True)[0]
                div = div + g.flatten(1)[:, j]
        else:
            div = 0.0
            for z in probes:
                gs = torch.autograd.grad(leaves_v, leaves_x, grad_outputs=_leaves(z), retain_graph=True)
                prod = gs[0] if torch.is_tensor(x) else {k: g for k, g in zip(x, gs)}
                div = div + geometry.reduce(tree_map(lambda a, b: a * b, prod, z), "sum")
            div = div / len(probes)
    return tree_map(lambda u: u.detach(), v), div.detach()


def log_likelihood(model: Any, x: State, *, process: Process, geometry: Geometry, steps: int = 100,
                   estimator: Literal["hutchinson", "exact"] = "hutchinson", n_probes: int = 1,
                   probe: Literal["rademacher", "gaussian"] = "rademacher", t0: float | None = None,
                   extra_args: dict | None = None, generator: torch.Generator | None = None,
                   progress: bool = False) -> LikelihoodOutput:
    """Log-density of ``x`` at time ``t0`` (default ``process.t_end``) by integrating the PF-ODE to t_max.

    Uses Heun's method on a uniform grid of ``steps`` steps; Hutchinson probes are drawn once
    and held fixed along the trajectory (FFJORD's practice), ``n_probes`` of them.
    ``bpd`` is ``-logp / (dims * ln 2)`` over the geometry's free dimensions.
    """
    extra_args = extra_args or {}
    t0 = process.t_end if t0 is None else t0
    ref = _leaves(x)[0]
    ts = torch.linspace(t0, process.t_max, steps + 1, device=ref.device, dtype=torch.float64).to(ref.dtype)
    probes = None
    if estimator == "hutchinson":
        def draw() -> State:
            z = geometry.randn_like(x, generator=generator)
            # probes are tangent vectors: masked / symmetrised, never wrapped onto a torus
            return geometry.project_tangent(tree_map(torch.sign, z)) if probe == "rademacher" else z
        probes = [draw() for _ in range(n_probes)]
    delta = torch.zeros(ref.shape[0], device=ref.device, dtype=ref.dtype)
    nfe = 0
    for i in tqdm(range(steps), desc="PF-ODE likelihood", disable=not progress, leave=False):
        t, s = ts[i], ts[i + 1]
        dt = s - t
        v1, d1 = _divergence(model, x, t, geometry, extra_args, estimator, probes)
        x_e = tree_map(lambda a, b: a + dt * b, x, v1)
        v2, d2 = _divergence(model, x_e, s, geometry, extra_args, estimator, probes)
        x = tree_map(lambda a, b, c: a + dt * 0.5 * (b + c), x, v1, v2)
        delta = delta + dt * 0.5 * (d1 + d2)
        nfe += 2
    prior = process.prior_logp(x, geometry)
    logp = prior + delta
    dims = geometry.dims(x)
    return LikelihoodOutput(logp=logp, prior_logp=prior, delta_logp=delta,
                            bpd=-logp / (dims * math.log(2)), latent=x, nfe=nfe)


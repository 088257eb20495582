"""Predictor–corrector sampling (Song et al. 2021, Alg. 1-4): reverse diffusion + Langevin."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process
from ..state import State, tree_map
from .common import Callback, batch_norm, require_stochastic, steps

__all__ = ["sample_pc", "langevin_step"]


def langevin_step(x: State, score: State, *, geometry: Geometry, snr: float, scale_eps: float = 1.0,
                  generator: torch.Generator | None = None) -> tuple[State, State]:
    """One Langevin corrector step with step size 2 (snr ||z|| / ||s||)^2 (Song et al. Alg. 4).

    Step sizes are per state variable (as GDSS does for X and A). Returns (x, x_mean).
    """
    z = geometry.randn_like(x, generator=generator)
    eps = tree_map(lambda zn, sn: 2 * (snr * zn / sn.clamp_min(1e-12)) ** 2,
                   batch_norm(z, geometry), batch_norm(score, geometry))
    x_mean = tree_map(lambda v, s, e: v + e * s, x, score, eps)
    x_new = tree_map(lambda m, e, n: m + torch.sqrt(2 * e) * n * scale_eps, x_mean, eps, z)
    return geometry.project(x_new), geometry.project(x_mean)


@torch.no_grad()
def sample_pc(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
              snr: float = 0.16, scale_eps: float = 1.0, n_corrector: int = 1,
              corrector_first: bool = False, extra_args: dict | None = None, callback: Callback = None,
              generator: torch.Generator | None = None, denoise: bool = True, progress: bool = False) -> State:
    """Predictor–corrector sampler: reverse-diffusion predictor and Langevin corrector.

    The predictor uses the exact Gaussian transition x_t = (alpha_t / alpha_s) x_s + sigma_{t|s} z:
    x_s = (alpha_s / alpha_t)(x_t + sigma_{t|s}^2 score) + sigma_{t|s} z (Song et al. Eq. 46/47;
    equal to their VE discretisation). ``corrector_first=True`` is GDSS's order.
    NFE = n (1 + n_corrector) (+1 if denoise).
    """
    require_stochastic(process, "sample_pc")
    extra_args = extra_args or {}
    x_mean = x

    def correct(x: State, t: Tensor) -> State:
        for _ in range(n_corrector):
            pred = model(x, t, geometry, **extra_args)
            x, _ = langevin_step(x, pred.score, geometry=geometry, snr=snr, scale_eps=scale_eps, generator=generator)
        return x

    for i, t, s in steps(ts, progress, "predictor-corrector"):
        if corrector_first:
            x = correct(x, t)
        pred = model(x, t, geometry, **extra_args)
        ct, cs = pred.coef, process.at(s, x, geometry)
        var = tree_map(lambda a_t, s_t, a_s, s_s: (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0),
                       ct.alpha, ct.sigma, cs.alpha, cs.sigma)
        x_mean = tree_map(lambda v, sc, a_t, a_s, q: (a_s / a_t) * (v + q * sc), x, pred.score, ct.alpha, cs.alpha, var)
        z = geometry.randn_like(x, generator=generator)
        x = geometry.project(tree_map(lambda m, q, n: m + q.sqrt() * n, x_mean, var, z))
        x_mean = geometry.project(x_mean)
        if not corrector_first:
            x = correct(x, s)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    if not corrector_first:
        x_mean = x
    return model(x_mean, ts[-1], geometry, **extra_args).x0 if denoise else x_mean

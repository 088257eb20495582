"""DDIM (Song, Meng & Ermon 2021, Eq. 12), generalised to any affine Gaussian process."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process, posterior_variance
from ..state import State, tree_map
from .common import Callback, PostStep, finish, post, steps

__all__ = ["sample_ddim"]


@torch.no_grad()
def sample_ddim(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
                eta: float = 0.0, extra_args: dict | None = None, callback: Callback = None,
                generator: torch.Generator | None = None, denoise: bool = True,
                progress: bool = False, post_step: PostStep = None) -> State:
    """x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, with c = eta (sigma_s / sigma_t) sigma_{t|s}.

    ``eta=0`` is deterministic DDIM; ``eta=1`` is the DDPM ancestral sampler (posterior variance).
    NFE = n (+1 if denoise).
    ``post_step(x, t_next, prediction) -> x`` is applied after every step and to the denoised
    estimate (see :data:`~workbench.samplers.common.PostStep`).
    """
    extra_args = extra_args or {}
    for i, t, s in steps(ts, progress, f"DDIM (eta={eta:g})"):
        pred = model(x, t, geometry, **extra_args)
        ct, cs = pred.coef, process.at(s, x, geometry)
        c = tree_map(lambda v: eta * v.sqrt(), posterior_variance(ct, cs))
        x_next = tree_map(lambda x0, e, a_s, s_s, cc: a_s * x0 + (s_s**2 - cc**2).clamp_min(0).sqrt() * e,
                          pred.x0, pred.eps, cs.alpha, cs.sigma, c)
        if eta > 0:
            z = geometry.randn_like(x, generator=generator)
            x_next = tree_map(lambda v, cc, n: v + cc * n, x_next, c, z)
        x = post(post_step, geometry.project(x_next), s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    return finish(model, x, ts[-1], geometry, extra_args, denoise, post_step)


#: DDIM is the first-order DPM-Solver; the log-SNR grid is its measured best among the grids that
#: suit every process (README, exact-score benchmark), for eta = 0 and eta = 1 alike
sample_ddim.default_spacing = "logsnr"

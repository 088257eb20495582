"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process
from ..state import State, tree_map
from .common import Callback, PostStep, finish, post, require_stochastic, steps

__all__ = ["sample_euler_maruyama"]


@torch.no_grad()
def sample_euler_maruyama(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
                          extra_args: dict | None = None, callback: Callback = None,
                          generator: torch.Generator | None = None, denoise: bool = True,
                          progress: bool = False, post_step: PostStep = None) -> State:
    """Euler–Maruyama discretisation of dx = [f x - g^2 score] dt + g dW_bar (Song et al. 2021, Eq. 6).

    Args:
        model: a denoiser ``model(x, t, geometry, **extra_args) -> Prediction``.
        x: prior sample at ``ts[0]``; ts: decreasing time grid ``[n + 1]``.
        denoise: finish with the Tweedie estimate E[x0 | x_{t_end}] (one more evaluation).
        post_step: ``post_step(x, t_next, prediction) -> x`` after every step, on the final mean
            and on the denoised estimate (see :data:`~workbench.samplers.common.PostStep`).
    Returns the sample, shaped like ``x``. NFE = n (+1 if denoise).
    """
    require_stochastic(process, "sample_euler_maruyama")
    extra_args = extra_args or {}
    x_mean = x
    for i, t, s in steps(ts, progress, "Euler-Maruyama"):
        pred = model(x, t, geometry, **extra_args)
        c, dt = pred.coef, s - t
        x_mean = tree_map(lambda v, sc, f, g2: v + (f * v - g2 * sc) * dt, x, pred.score, c.f, c.g2)
        z = geometry.randn_like(x, generator=generator)
        x = geometry.project(tree_map(lambda m, g2, n: m + torch.sqrt(g2 * -dt) * n, x_mean, c.g2, z))
        x = post(post_step, x, s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    x = post(post_step, geometry.project(x_mean), ts[-1], pred)
    return finish(model, x, ts[-1], geometry, extra_args, denoise, post_step)


#: the process's own grid (uniform in t: Song et al.'s discretisation of the reverse SDE, so the paper
#: settings are reproduced); the log-SNR grid measured better on the exact-score benchmark, ask
#: for it with ``spacing="logsnr"`` / ``sample_spacing=logsnr``
sample_euler_maruyama.default_spacing = None

"""Probability-flow ODE samplers (Song et al. 2021, Eq. 13; Heun: Karras et al. 2022, Alg. 1)."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process
from ..state import State, tree_map
from .common import Callback, PostStep, finish, post, steps

__all__ = ["sample_ode"]


@torch.no_grad()
def sample_ode(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
               method: Literal["euler", "heun"] = "heun", extra_args: dict | None = None,
               callback: Callback = None, generator: torch.Generator | None = None,
               denoise: bool = True, progress: bool = False, post_step: PostStep = None) -> State:
    """Integrate dx/dt = alpha'(t) x0(x, t) + sigma'(t) eps(x, t), the PF-ODE velocity.

    ``method="heun"`` is EDM's second-order step (Alg. 1); ``"euler"`` is first order.
    NFE = n (euler) or 2n (heun), +1 if denoise. ``generator`` is unused (deterministic).
    ``post_step(x, t_next, prediction) -> x`` is applied after every step and to the denoised
    estimate (see :data:`~workbench.samplers.common.PostStep`).
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    extra_args = extra_args or {}
    for i, t, s in steps(ts, progress, f"ODE ({method})"):
        pred = model(x, t, geometry, **extra_args)
        d1, dt = pred.velocity, s - t
        x_next = tree_map(lambda v, d: v + dt * d, x, d1)
        if method == "heun":
            d2 = model(x_next, s, geometry, **extra_args).velocity
            x_next = tree_map(lambda v, a, b: v + dt * 0.5 * (a + b), x, d1, d2)
        x = post(post_step, geometry.project(x_next), s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    return finish(model, x, ts[-1], geometry, extra_args, denoise, post_step)


def _ode_spacing(method: str = "heun", **_: Any) -> str:
    """Heun: EDM's rho-spaced grid (Karras et al. 2022, built with it; on the exact-score benchmark
    of the README it and the log-SNR grid each win on some processes); Euler: the log-SNR grid
    (measured best of the grids that suit every process)."""
    return "karras" if method == "heun" else "logsnr"


sample_ode.default_spacing = _ode_spacing

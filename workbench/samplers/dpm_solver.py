"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): multistep data-prediction solver."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process
from ..state import State, tree_map
from .common import Callback, PostStep, finish, post, steps

__all__ = ["sample_dpm_solver"]


@torch.no_grad()
def sample_dpm_solver(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
                      lower_order_final: bool = True, extra_args: dict | None = None, callback: Callback = None,
                      generator: torch.Generator | None = None, denoise: bool = True,
                      progress: bool = False, post_step: PostStep = None) -> State:
    """Second-order multistep solver in log-SNR time lambda = log(alpha / sigma).

    x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) D, h = lambda_s - lambda_t, with
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev and r = h_prev / h (first step: D = x0_t).
    ``lower_order_final`` takes the last step with D = x0_t (first order, DPM-Solver++'s and
    diffusers' "lower_order_final"): the two-step extrapolation is least stable where the data
    are resolved, and on grids whose last log-SNR jump is large it overshoots.
    Built for a grid uniform in log-SNR (its default, ``default_spacing = "logsnr"``).
    NFE = n (+1 if denoise). ``generator`` is unused (deterministic).
    ``post_step(x, t_next, prediction) -> x`` is applied after every step and to the denoised
    estimate (see :data:`~workbench.samplers.common.PostStep`).
    """
    extra_args = extra_args or {}
    x0_prev, h_prev = None, None
    last = len(ts) - 2
    for i, t, s in steps(ts, progress, "DPM-Solver++(2M)"):
        pred = model(x, t, geometry, **extra_args)
        ct, cs = pred.coef, process.at(s, x, geometry)
        h = tree_map(lambda a, b: a - b, cs.log_snr, ct.log_snr)
        if x0_prev is None or (lower_order_final and i == last):
            d = pred.x0
        else:
            d = tree_map(lambda x0, xp, hh, hp: x0 + (hh / (2 * hp)) * (x0 - xp), pred.x0, x0_prev, h, h_prev)
        x = geometry.project(tree_map(lambda v, dd, s_t, s_s, a_s, hh: (s_s / s_t) * v - a_s * torch.expm1(-hh) * dd,
                                      x, d, ct.sigma, cs.sigma, cs.alpha, h))
        x = post(post_step, x, s, pred)
        x0_prev, h_prev = pred.x0, h
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    return finish(model, x, ts[-1], geometry, extra_args, denoise, post_step)


sample_dpm_solver.default_spacing = "logsnr"

"""GDSS's S4 solver: Symmetric Splitting for System of SDEs (Jo et al. 2022, Alg. 2 / App. C)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Process, transition_variance
from ..state import State, tree_map
from .common import Callback, PostStep, finish, post, require_stochastic, steps
from .pc import _alpha_ratio_sq, langevin_step

__all__ = ["sample_s4"]


@torch.no_grad()
def sample_s4(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
              snr: float = 0.1, scale_eps: float = 1.0, corrector: bool = True,
              extra_args: dict | None = None, callback: Callback = None, generator: torch.Generator | None = None,
              denoise: bool = False, progress: bool = False, post_step: PostStep = None) -> State:
    """One score evaluation per step for every variable of the system:

    1. s = score(x_t, t) (all variables at once, from the same state);
    2. Langevin correction of x_t with that score (if ``corrector``);
    3. half step of the forward-drift transition from t to m = t + dt/2:
       x <- (alpha_m / alpha_t) x + sigma_{t|m} z;
    4. score drift from the pre-correction score: x <- x + g(t)^2 s |dt|;
    5. second half step from m to s = t + dt, keeping its mean as the noise-free estimate.

    ``denoise=False`` (GDSS) returns the last transition mean; ``True`` the Tweedie estimate.
    ``post_step(x, t_next, prediction) -> x`` is applied after every step, to the last transition
    mean and to the denoised estimate (see :data:`~workbench.samplers.common.PostStep`).
    NFE = n (+1 if denoise).
    """
    require_stochastic(process, "sample_s4")
    extra_args = extra_args or {}
    x_mean = x
    for i, t, s in steps(ts, progress, "S4"):
        dt = s - t
        m = t + 0.5 * dt
        pred = model(x, t, geometry, **extra_args)
        ct, cm, cs = pred.coef, process.at(m, x, geometry), process.at(s, x, geometry)
        score = pred.score
        drift = tree_map(lambda sc, g2: g2 * sc * -dt, score, ct.g2)
        if corrector:
            x, _ = langevin_step(x, score, geometry=geometry, snr=snr, scale_eps=scale_eps,
                                 alpha=_alpha_ratio_sq(ct, cs), generator=generator, coef=ct)

        def half(v: State, c0: Any, c1: Any) -> tuple[State, State]:
            mean = tree_map(lambda u, a0, a1: (a1 / a0) * u, v, c0.alpha, c1.alpha)
            std = tree_map(torch.sqrt, transition_variance(c0, c1))
            z = geometry.randn_like(v, generator=generator)
            return tree_map(lambda mu, sd, n: mu + sd * n, mean, std, z), mean

        x, _ = half(x, ct, cm)
        x = tree_map(lambda v, d: v + d, x, drift)
        x, x_mean = half(x, cm, cs)
        x, x_mean = geometry.project(x), geometry.project(x_mean)
        x = post(post_step, x, s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    x_mean = post(post_step, x_mean, ts[-1], pred)
    return finish(model, x_mean, ts[-1], geometry, extra_args, denoise, post_step)


#: the process's own grid (uniform in t: GDSS's discretisation of the reverse SDE, so the paper
#: settings are reproduced); the log-SNR grid measured better on the exact-score benchmark, ask
#: for it with ``spacing="logsnr"`` / ``sample_spacing=logsnr``
sample_s4.default_spacing = None

"""Predictor–corrector sampling (Song et al. 2021, Alg. 1-4): reverse diffusion + Langevin."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..geometry import Geometry
from ..processes.base import Coefficients, Process, transition_variance
from ..state import State, tree_map
from .common import Callback, PostStep, batch_norm, finish, post, require_stochastic, steps

__all__ = ["sample_pc", "langevin_step", "reverse_step"]

Predictor = Literal["reverse_diffusion", "ancestral", "euler_maruyama", "none"]


def langevin_step(x: State, score: State, *, geometry: Geometry, snr: float, scale_eps: float = 1.0,
                  alpha: Any = 1.0, generator: torch.Generator | None = None,
                  coef: Coefficients | None = None) -> tuple[State, State]:
    """One Langevin corrector step with step size 2 alpha (snr ||z|| / ||s||)^2 (Song et al. Alg. 4).

    Norms are per-sample L2 norms averaged over the batch, separately per state variable (as GDSS
    does for X and A) and, given the score's coefficients ``coef``, per noise group of entries
    sharing a schedule (per channel under a per-channel schedule; see
    :func:`~workbench.samplers.common.batch_norm`), so each schedule gets its own step size.
    ``alpha`` is 1 - beta_i for VP-type processes and 1 for VE (score_sde's choice; elementwise
    under per-element schedules); ``scale_eps`` scales the injected noise (GDSS). Returns (x, x_mean).
    """
    z = geometry.randn_like(x, generator=generator)
    eps = tree_map(lambda zn, sn, a: 2 * a * (snr * zn / sn.clamp_min(1e-12)) ** 2,
                   batch_norm(z, geometry, coef), batch_norm(score, geometry, coef), alpha)
    x_mean = tree_map(lambda v, s, e: v + e * s, x, score, eps)
    x_new = tree_map(lambda m, e, n: m + torch.sqrt(2 * e) * n * scale_eps, x_mean, eps, z)
    return geometry.project(x_new), geometry.project(x_mean)


def _alpha_ratio_sq(ct: Coefficients, cs: Coefficients) -> Any:
    """(alpha_t / alpha_s)^2 = 1 - beta_i for a VP step, 1 for VE: score_sde's Langevin alpha."""
    return tree_map(lambda a_t, a_s: (a_t / a_s) ** 2, ct.alpha, cs.alpha)


def reverse_step(kind: Predictor, x: State, score: State, ct: Coefficients, cs: Coefficients,
                 dt: Tensor, z: State) -> tuple[State, State]:
    """One predictor step from t to s = t + dt (dt < 0). Returns (x_s, mean of x_s).

    * ``reverse_diffusion``: Song et al.'s reverse-diffusion predictor on the process's own
      discretisation x_t = (alpha_t / alpha_s) x_s + sigma_{t|s} z (DDPM for VP, SMLD for VE):
      x_s = x_t + (1 - alpha_t / alpha_s) x_t + sigma_{t|s}^2 score + sigma_{t|s} z.
    * ``ancestral``: the exact Gaussian reverse of that discretisation,
      x_s = (alpha_s / alpha_t)(x_t + sigma_{t|s}^2 score) + sigma_{t|s} z.
    * ``euler_maruyama``: x_s = x_t + (f x_t - g^2 score) dt + g sqrt(-dt) z.
    * ``none``: no move (corrector-only sampling).
    """
    if kind == "none":
        return x, x
    if kind == "euler_maruyama":
        mean = tree_map(lambda v, sc, f, g2: v + (f * v - g2 * sc) * dt, x, score, ct.f, ct.g2)
        return tree_map(lambda m, g2, n: m + torch.sqrt(g2 * -dt) * n, mean, ct.g2, z), mean
    var = transition_variance(ct, cs)
    if kind == "reverse_diffusion":
        mean = tree_map(lambda v, sc, a_t, a_s, q: v + (1 - a_t / a_s) * v + q * sc, x, score, ct.alpha, cs.alpha, var)
    elif kind == "ancestral":
        mean = tree_map(lambda v, sc, a_t, a_s, q: (a_s / a_t) * (v + q * sc), x, score, ct.alpha, cs.alpha, var)
    else:
        raise ValueError(f"unknown predictor {kind!r}; use reverse_diffusion, ancestral, euler_maruyama or none")
    return tree_map(lambda m, q, n: m + q.sqrt() * n, mean, var, z), mean


@torch.no_grad()
def sample_pc(model: Any, x: State, ts: Tensor, *, process: Process, geometry: Geometry,
              predictor: Predictor = "reverse_diffusion", corrector: Literal["langevin", "none"] = "langevin",
              snr: float = 0.16, scale_eps: float = 1.0, n_corrector: int = 1, corrector_first: bool = False,
              extra_args: dict | None = None, callback: Callback = None, generator: torch.Generator | None = None,
              denoise: bool = True, progress: bool = False, post_step: PostStep = None) -> State:
    """Predictor–corrector sampler (Song et al. 2021, Alg. 1; GDSS's PC sampler).

    Args:
        predictor: see :func:`reverse_step`.
        corrector: ``"langevin"`` (Alg. 4, ``n_corrector`` steps at signal-to-noise ``snr``) or ``"none"``.
        corrector_first: correct at t before predicting (GDSS's order) instead of after (Song's).
        denoise: end with the Tweedie estimate at t_end from the last predictor mean; with
            ``False`` that mean itself is returned (score_sde's and GDSS's noise removal: the
            predictor's mean, without its noise and without any later corrector step).
        post_step: ``post_step(x, t_next, prediction) -> x`` after every step (after the
            corrector; ``prediction`` is the predictor's), on the last predictor mean and on the
            denoised estimate (see :data:`~workbench.samplers.common.PostStep`).
    NFE = n (1 + n_corrector) (+1 if denoise).
    """
    require_stochastic(process, "sample_pc")
    if corrector not in ("langevin", "none"):
        raise ValueError(f"corrector must be 'langevin' or 'none', got {corrector!r}")
    extra_args = extra_args or {}
    x_mean = x

    def correct(x: State, t: Tensor, alpha: Any) -> State:
        if corrector == "none":
            return x
        for _ in range(n_corrector):
            pred = model(x, t, geometry, **extra_args)
            x, _ = langevin_step(x, pred.score, geometry=geometry, snr=snr, scale_eps=scale_eps,
                                 alpha=alpha, generator=generator, coef=pred.coef)
        return x

    for i, t, s in steps(ts, progress, "predictor-corrector"):
        ct, cs = process.at(t, x, geometry), process.at(s, x, geometry)
        alpha = _alpha_ratio_sq(ct, cs)
        if corrector_first:
            x = correct(x, t, alpha)
        pred = model(x, t, geometry, **extra_args)
        z = geometry.randn_like(x, generator=generator)
        x, x_mean = reverse_step(predictor, x, pred.score, pred.coef, cs, s - t, z)
        x, x_mean = geometry.project(x), geometry.project(x_mean)
        if not corrector_first:
            x = correct(x, s, alpha)  # x_mean stays the predictor's mean
        x = post(post_step, x, s, pred)
        if callback is not None:
            callback(i=i, t=t, x=x, prediction=pred)
    x_mean = post(post_step, x_mean, ts[-1], pred)
    return finish(model, x_mean, ts[-1], geometry, extra_args, denoise, post_step)


#: the process's own grid (uniform in t: Song et al.'s and GDSS's discretisation of the reverse
#: SDE, so the paper settings are reproduced); ask for another with ``spacing=`` / ``sample_spacing=``
sample_pc.default_spacing = None

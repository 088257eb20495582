"""Helpers shared by the samplers: step iteration with progress bars, norms, checks."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..geometry import Geometry
from ..precond import Prediction
from ..processes.base import Coefficients, Process
from ..state import State

__all__ = ["Callback", "PostStep", "post", "steps", "finish", "batch_norm", "require_stochastic", "NFECounter", "default_spacing",
           "sampler_grid"]

#: ``callback(i, t, x, prediction)`` is called after every step.
Callback = Optional[Callable[..., None]]

#: ``post_step(x, t_next, prediction) -> x``: a per-step hook (data consistency, writing known
#: entries back, ...). Every sampler applies it to the state after each step's projection and
#: before the callback (``t_next`` is the time the state is now at, ``prediction`` the step's
#: network output), and to every value it returns in place of the state: the noise-free mean
#: at the last grid time (Euler-Maruyama, PC, S4) and the denoised estimate of :func:`finish`.
#: The hook's output is used as is (not projected again).
PostStep = Optional[Callable[[State, Tensor, Prediction], State]]


def post(post_step: PostStep, x: State, t: Tensor, prediction: Prediction) -> State:
    """``post_step(x, t, prediction)``, or ``x`` unchanged when there is no hook."""
    return x if post_step is None else post_step(x, t, prediction)


def steps(ts: Tensor, progress: bool, desc: str) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(i, t_i, t_{i+1})`` over a decreasing time grid, with an optional tqdm bar."""
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"time grid must be 1-D with at least 2 entries, got shape {tuple(ts.shape)}")
    idx = range(len(ts) - 1)
    for i in tqdm(idx, desc=desc, disable=not progress, leave=False):
        yield i, ts[i], ts[i + 1]


#: most noise groups :func:`batch_norm` separates (one reduction each)
MAX_NOISE_GROUPS = 256


def batch_norm(x: State, geometry: Geometry, coef: Coefficients | None = None) -> Any:
    """Per-variable L2 norm of each sample, averaged over the batch (Song et al. Alg. 4's ||z||).

    With ``coef`` (broadcast coefficients) the norm is also taken per *noise group* of a variable:
    the entries that share their alpha and sigma, i.e. one group per index along the axes where
    the coefficients vary within a sample (per channel for a
    :class:`~workbench.processes.PerChannelProcess`). The result is then a tensor broadcasting
    against the variable. Per-sample coefficients give the plain norm.
    """
    if isinstance(x, dict):
        return {k: batch_norm(v, geometry.part(k), None if coef is None else _part(coef, k)) for k, v in x.items()}
    axes = [] if coef is None else _varying_axes(x, coef.alpha, coef.sigma)
    if not axes:
        return geometry.reduce(x * x, "sum").sqrt().mean()
    shape = [1] * x.ndim
    for d in axes:
        shape[d] = x.shape[d]
    n = math.prod(shape)
    if n > MAX_NOISE_GROUPS:
        raise ValueError(f"the Langevin corrector's step size is set per noise group, but these coefficients vary "
                         f"over {n} groups within a sample (more than {MAX_NOISE_GROUPS}); use a per-channel "
                         "schedule or no corrector (corrector='none' / corrector=False)")
    ids = torch.arange(n, device=x.device).reshape(shape)
    out = torch.zeros(shape, device=x.device, dtype=x.dtype)
    for g in range(n):
        ind = (ids == g).to(x.dtype)
        out = out + ind * geometry.reduce(x * x * ind, "sum").sqrt().mean()
    return out


def _part(coef: Coefficients, key: str) -> Coefficients:
    return Coefficients(*(getattr(coef, f)[key] for f in ("alpha", "sigma", "d_alpha", "d_sigma")))


def _varying_axes(x: Tensor, *coefs: Tensor) -> list[int]:
    """The axes (after the batch) along which any of ``coefs`` (broadcast to ``x``) varies."""
    axes = []
    for d in range(1, x.ndim):
        for c in coefs:
            if d < c.ndim and c.shape[d] > 1 and not torch.equal(c, c.narrow(d, 0, 1).expand_as(c)):
                axes.append(d)
                break
    return axes


def finish(model: Any, x: State, t: Tensor, geometry: Geometry, extra_args: dict, denoise: bool,
           post_step: PostStep = None) -> State:
    """A sampler's result: with ``denoise`` the Tweedie estimate E[x0 | x_t] at the last grid time
    (one more evaluation), projected onto the constraint set like every state and then passed
    through ``post_step(x0, t, prediction)`` (a new network prediction, so the hook's constraint
    would not hold otherwise); else ``x`` as it is (the sampler has already applied the hook)."""
    if not denoise:
        return x
    pred = model(x, t, geometry, **extra_args)
    return post(post_step, geometry.project(pred.x0), t, pred)


def require_stochastic(process: Process, name: str) -> None:
    if not process.stochastic:
        raise ValueError(
            f"{name} integrates the reverse SDE, which is not defined for {type(process).__name__} "
            "(its drift blows up at t = 1); use sample_ode, sample_ddim or sample_dpm_solver"
        )


class NFECounter:
    """Wraps a denoiser and counts network evaluations (for benchmarks)."""

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model, self.nfe = model, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.nfe += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def default_spacing(sampler: Callable[..., Any], **kwargs: Any) -> str | None:
    """The time-grid spacing ``sampler`` is built for, or None for the process's own default.

    A sampler declares it as the attribute ``default_spacing``: a spacing name, or a function
    of the sampler's keyword arguments (``sample_ode`` prefers one grid for Heun, another for
    Euler). It is found through ``functools.partial`` wrappers (Hydra's ``_partial_: true``),
    whose keywords, overridden by ``kwargs``, are what such a function sees.
    """
    fn, kw = sampler, {}
    while isinstance(fn, functools.partial):
        kw = {**fn.keywords, **kw}
        fn = fn.func
    pref = getattr(fn, "default_spacing", None)
    return pref(**{**kw, **kwargs}) if callable(pref) else pref


def sampler_grid(process: Process, sampler: Callable[..., Any], steps: int, *, spacing: str | None = None,
                 device: torch.device | str = "cpu", **kwargs: Any) -> Tensor:
    """The time grid to run ``sampler`` on: ``spacing`` when given; else the sampler's
    :func:`default_spacing` where the process offers it (a JointProcess whose variables, or a
    PerChannelProcess whose channels, have different noise schedules refuses a noise-level grid);
    else the process's own default. A ``spacing`` given explicitly is never replaced."""
    if spacing:
        return process.time_grid(steps, spacing=spacing, device=device)
    pref = default_spacing(sampler, **kwargs)
    if pref:
        try:
            return process.time_grid(steps, spacing=pref, device=device)
        except ValueError:
            pass
    return process.time_grid(steps, device=device)

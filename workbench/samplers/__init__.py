"""Samplers: pure ``@torch.no_grad()`` functions
``sample_<algo>(model, x, ts, *, process, geometry, extra_args, callback, generator, denoise, progress,
post_step)``.

``post_step(x, t_next, prediction) -> x`` (optional, :data:`common.PostStep`) is a per-step hook
(data consistency, writing known entries back): applied to the state after each step's
projection and before the callback (DPM-Solver++(2M): after the multistep update; PC: after the
corrector), and to whatever the sampler returns in place of the state, so the returned sample
satisfies it too: the noise-free mean at the last time (Euler-Maruyama, PC, S4) and, with
``denoise=True``, the final denoised estimate (a new network prediction; see :func:`common.finish`).
Its output is not projected again. ``post_step=None`` changes nothing.
"""
from .common import NFECounter, batch_norm
from .ddim import sample_ddim
from .dpm_solver import sample_dpm_solver
from .euler_maruyama import sample_euler_maruyama
from .ode import sample_ode
from .pc import langevin_step, reverse_step, sample_pc
from .s4 import sample_s4

__all__ = [
    "sample_euler_maruyama", "sample_pc", "sample_ode", "sample_ddim", "sample_dpm_solver",
    "sample_s4", "langevin_step", "reverse_step", "NFECounter", "batch_norm",
]

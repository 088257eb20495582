"""Samplers: pure ``@torch.no_grad()`` functions
``sample_<algo>(model, x, ts, *, process, geometry, extra_args, callback, generator, denoise, progress)``.
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

"""Forward processes: one class per family (see :mod:`workbench.processes.base`)."""
from .base import Coefficients, Process
from .ddpm import DiscreteDDPM, make_betas
from .edm import EDM
from .interpolants import LinearInterpolant, TrigInterpolant
from .joint import JointProcess
from .per_channel import PerChannelProcess
from .subvp import SubVP
from .ve import VE
from .vp import VP

__all__ = [
    "Coefficients", "Process", "VP", "SubVP", "VE", "EDM", "LinearInterpolant", "TrigInterpolant",
    "DiscreteDDPM", "make_betas", "JointProcess", "PerChannelProcess",
]

"""Per-channel noise schedules: one forward process per channel of a Tensor state, one shared t.

WDNO noises its wavelet sub-bands differently and a multi-channel field may need a schedule per
channel. :class:`PerChannelProcess` gives channel ``c`` (index ``c`` along axis ``dim``) its own
process; its coefficients are ``[B, 1, ..., C]`` (``C`` at axis ``dim``), which the geometry
broadcasts to the state by appending trailing singleton dims. Samplers, losses (every weighting,
elementwise), the likelihood and the prior then act per element with no further change.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..geometry import Geometry
from ..state import State
from .base import Coefficients, Process
from .joint import check_shared_time, same_log_snr

__all__ = ["PerChannelProcess"]


class PerChannelProcess(Process):
    """Channel ``c`` of the state (along axis ``dim``) follows ``processes[c]``; t is shared.

    What one shared t needs is checked at construction as for
    :class:`~workbench.processes.JointProcess` (time range, training-time distribution, network
    time). Time grids uniform in t or sqrt(t) are shared; a grid defined by one noise level
    (``"logsnr"``, ``"karras"``) is refused (an :class:`~workbench.errors.InputError`, one line in
    the CLI) when the channels' log-SNR curves differ (samplers
    whose own default is such a grid, DPM-Solver, DDIM and Heun, then run on the process's default
    grid, uniform in t, through :func:`~workbench.samplers.common.sampler_grid`). EDM
    preconditioning, which hands the network one noise level, is refused likewise by
    :class:`~workbench.precond.Denoiser`.

    Args:
        processes: one process per channel (``C >= 1``).
        dim: the channel axis of the Tensor state (>= 1; axis 0 is the batch). Counted from the
            front, so the coefficients broadcast by appending trailing dims.

    Example:
        ``PerChannelProcess([VP(0.1, 20.0), SubVP(0.1, 20.0)], dim=1)`` for a ``[B, 2, ...]`` state.
    """

    def __init__(self, processes: Sequence[Process], dim: int = 1) -> None:
        procs = list(processes)
        if not procs:
            raise ValueError("PerChannelProcess needs at least one process (one per channel)")
        for i, p in enumerate(procs):
            if not isinstance(p, Process):
                raise ValueError(f"PerChannelProcess: channel {i} is a {type(p).__name__}, not a Process")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"PerChannelProcess: dim must be an axis >= 1 counted from the front (0 is the "
                             f"batch), got {dim}")
        first = check_shared_time(dict(enumerate(procs)), "PerChannelProcess")
        super().__init__(t_eps=first.t_eps, t_end=first.t_end, t_max=first.t_max)
        self.processes, self.dim = procs, int(dim)
        self.stochastic = all(p.stochastic for p in procs)

    @property
    def channels(self) -> int:
        return len(self.processes)

    def _place(self, v: Tensor) -> Tensor:
        """``[B, C]`` -> ``[B, 1, ..., C]`` with C at axis ``dim``."""
        return v.reshape(v.shape[0], *([1] * (self.dim - 1)), v.shape[1])

    def coefficients(self, t: Tensor) -> Coefficients:
        """Coefficients ``[B, 1, ..., C]`` (C at axis ``dim``)."""
        cs = [p.coefficients(t) for p in self.processes]
        return Coefficients(*(self._place(torch.stack([getattr(c, f) for c in cs], dim=-1))
                              for f in ("alpha", "sigma", "d_alpha", "d_sigma")))

    def at(self, t: Tensor | float, x: State, geometry: Geometry) -> Coefficients:
        self._check_state(x)
        return super().at(t, x, geometry)

    def _check_state(self, x: State) -> None:
        if not torch.is_tensor(x):
            raise ValueError("PerChannelProcess applies to a Tensor state; for a dict state give it to one "
                             "variable of a JointProcess")
        if x.ndim <= self.dim or x.shape[self.dim] != self.channels:
            raise ValueError(f"PerChannelProcess has {self.channels} channel processes for axis {self.dim}, but "
                             f"the state has shape {tuple(x.shape)}")

    def same_noise_schedule(self) -> bool:
        """Whether every channel has the same log-SNR curve (then per-level quantities are shared)."""
        return same_log_snr(self.processes, self.t_end, self.t_max)

    def net_time(self, t: Tensor) -> Tensor:
        return self.processes[0].net_time(t)

    def sample_t(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        return self.processes[0].sample_t(n, device=device, generator=generator)

    def time_grid(self, steps: int, *, spacing: str = "time", device: torch.device | str = "cpu") -> Tensor:
        if spacing not in ("time", "quadratic") and not self.same_noise_schedule():
            raise InputError(
                f"time-grid spacing {spacing!r} follows one noise schedule, but the {self.channels} channels of "
                "this PerChannelProcess have different ones; use spacing='time' or 'quadratic'")
        return self.processes[0].time_grid(steps, spacing=spacing, device=device)

    def prior_std(self) -> Tensor:
        """Per-channel prior std ``[1, 1, ..., C]`` (float64; C at axis ``dim``)."""
        std = torch.tensor([float(p.prior_std()) for p in self.processes], dtype=torch.float64)
        return self._place(std.unsqueeze(0))

    def prior_sample(self, template: State, geometry: Geometry,
                     generator: torch.Generator | None = None) -> State:
        self._check_state(template)
        return super().prior_sample(template, geometry, generator)

    def prior_logp(self, x: State, geometry: Geometry) -> Tensor:
        self._check_state(x)
        return super().prior_logp(x, geometry)

    def __repr__(self) -> str:
        return f"PerChannelProcess([{', '.join(repr(p) for p in self.processes)}], dim={self.dim})"

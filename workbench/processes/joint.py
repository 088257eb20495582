"""A system of SDEs (GDSS, Jo et al. 2022): one process per State key, one shared time t."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .base import Coefficients, Process

__all__ = ["JointProcess"]


class JointProcess(Process):
    """Gives each variable of a dict state its own forward process; t is shared.

    Coefficients are dicts keyed like the state. Training times, the sampling grid
    and the network time come from the first process, and all processes must agree
    on ``t_eps``, ``t_end`` and ``t_max``.

    Example:
        ``JointProcess({"x": VP(0.1, 1.0), "adj": VE(0.2, 1.0)})``
    """

    def __init__(self, processes: Mapping[str, Process] | None = None, **kwargs: Process) -> None:
        procs = dict(processes or {}, **kwargs)
        if not procs:
            raise ValueError("JointProcess needs at least one process")
        first = next(iter(procs.values()))
        for k, p in procs.items():
            if (p.t_eps, p.t_end, p.t_max) != (first.t_eps, first.t_end, first.t_max):
                raise ValueError(f"JointProcess: process {k!r} has a different time range from the first one")
        super().__init__(t_eps=first.t_eps, t_end=first.t_end, t_max=first.t_max)
        self.processes = procs
        self.stochastic = all(p.stochastic for p in procs.values())

    @property
    def _first(self) -> Process:
        return next(iter(self.processes.values()))

    def coefficients(self, t: Tensor) -> Coefficients:
        cs = {k: p.coefficients(t) for k, p in self.processes.items()}
        return Coefficients(*({k: getattr(c, f) for k, c in cs.items()} for f in ("alpha", "sigma", "d_alpha", "d_sigma")))

    def net_time(self, t: Tensor) -> Tensor:
        return self._first.net_time(t)

    def sample_t(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        return self._first.sample_t(n, device=device, generator=generator)

    def time_grid(self, steps: int, *, spacing: str = "time", device: torch.device | str = "cpu") -> Tensor:
        return self._first.time_grid(steps, spacing=spacing, device=device)

    def prior_std(self) -> dict[str, float]:
        return {k: p.prior_std() for k, p in self.processes.items()}

    def __repr__(self) -> str:
        return "JointProcess(" + ", ".join(f"{k}={p!r}" for k, p in self.processes.items()) + ")"

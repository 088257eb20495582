"""A system of SDEs (GDSS, Jo et al. 2022): one process per State key, one shared time t."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from .base import Coefficients, Process

__all__ = ["JointProcess", "check_shared_time", "same_log_snr"]


def check_shared_time(procs: Mapping[Any, Process], owner: str) -> Process:
    """Check that ``procs`` can share one time t (same ``t_eps``, ``t_end``, ``t_max``, training-time
    distribution and network time); raises ValueError naming the first offending key. Returns the
    first process."""
    first = next(iter(procs.values()))
    for k, p in procs.items():
        if (p.t_eps, p.t_end, p.t_max) != (first.t_eps, first.t_end, first.t_max):
            raise ValueError(f"{owner}: process {k!r} has a different time range from the first one")
    probe = torch.linspace(first.t_end, first.t_max, 33, dtype=torch.float64)
    k0 = next(iter(procs))
    for k, p in procs.items():
        g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        if not torch.allclose(p.sample_t(64, generator=g0).double(), first.sample_t(64, generator=g1).double()):
            raise ValueError(f"{owner}: processes {k0!r} and {k!r} draw training times differently; "
                             "a shared t needs one training-time distribution")
        if not torch.allclose(p.net_time(probe), first.net_time(probe)):
            raise ValueError(f"{owner}: processes {k0!r} and {k!r} hand the network different time "
                             "values (net_time); a shared t needs one")
    return first


def same_log_snr(procs: Iterable[Process], t_end: float, t_max: float) -> bool:
    """Whether the processes (and, for per-channel processes, their channels) have the same log-SNR
    curve on [t_end, t_max)."""
    probe = torch.linspace(t_end, t_max, 65, dtype=torch.float64)[:-1]
    lams = torch.cat([p.coefficients(probe).log_snr.reshape(len(probe), -1) for p in procs], dim=1)
    return torch.allclose(lams, lams[:, :1].expand_as(lams), rtol=1e-6, atol=1e-6)


class JointProcess(Process):
    """Gives each variable of a dict state its own forward process; t is shared.

    Coefficients are dicts keyed like the state, so losses, samplers and guidance use each
    variable's own alpha, sigma and their derivatives. What must be shared is checked, not
    assumed: all processes must agree on ``t_eps``, ``t_end``, ``t_max``, on the training-time
    distribution and on the time handed to the network (else construction fails naming the
    keys). A time grid uniform in t or sqrt(t) is shared as well; a grid defined by a variable's
    noise level (``"logsnr"``, ``"karras"``) is only accepted when every variable has the same
    log-SNR curve, since one shared t cannot follow two curves.

    Example:
        ``JointProcess({"x": VP(0.1, 1.0), "adj": VE(0.2, 1.0)})``
    """

    def __init__(self, processes: Mapping[str, Process] | None = None, **kwargs: Process) -> None:
        procs = dict(processes or {}, **kwargs)
        if not procs:
            raise ValueError("JointProcess needs at least one process")
        first = check_shared_time(procs, "JointProcess")
        super().__init__(t_eps=first.t_eps, t_end=first.t_end, t_max=first.t_max)
        self.processes = procs
        self.stochastic = all(p.stochastic for p in procs.values())

    def same_noise_schedule(self) -> bool:
        """Whether every variable has the same log-SNR curve (then per-level quantities are shared)."""
        return same_log_snr(self.processes.values(), self.t_end, self.t_max)

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
        if spacing not in ("time", "quadratic") and not self.same_noise_schedule():
            raise ValueError(
                f"time-grid spacing {spacing!r} follows one noise schedule, but the variables "
                f"{list(self.processes)} of this JointProcess have different ones; use spacing='time' or 'quadratic'")
        return self._first.time_grid(steps, spacing=spacing, device=device)

    def prior_std(self) -> dict[str, float]:
        return {k: p.prior_std() for k, p in self.processes.items()}

    def __repr__(self) -> str:
        return "JointProcess(" + ", ".join(f"{k}={p!r}" for k, p in self.processes.items()) + ")"

"""Data consistency as a per-step correction of the state (DiffusionMBIR, Chung et al. 2023;
Song et al. 2022, "Solving inverse problems in medical imaging with score-based models").

Not a modified prediction: after every sampler step the state is moved onto (or towards) the
measurements. :class:`DataConsistency` is a denoiser wrapper that leaves the prediction
unchanged and carries the correction as its method :meth:`DataConsistency.post_step`, which is
the samplers' ``post_step(x, t_next, prediction) -> x`` hook
(:data:`workbench.samplers.common.PostStep`); :func:`workbench.conditional.posterior_samples`
hands it to the sampler.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..geometry import Euclidean, Geometry
from ..operators.solvers import conjugate_gradient
from ..precond import Prediction
from ..state import State
from .base import DenoiserWrapper

__all__ = ["DataConsistency", "project_affine", "prox_data"]


def project_affine(op: Any, x: Tensor, y: Tensor, tol: float = 1e-6, max_iter: int = 50) -> Tensor:
    """The orthogonal projection of ``x`` onto ``{u : A u = y}``: ``x - A^T v`` with
    ``(A A^T) v = A x - y`` solved by conjugate gradient in measurement space (exact in one
    iteration for a :class:`~workbench.operators.Mask`; ``y`` must lie in the range of A)."""
    v = conjugate_gradient(lambda w: op.forward(op.adjoint(w)), op.forward(x) - y, tol=tol, max_iter=max_iter)
    return x - op.adjoint(v)


def prox_data(op: Any, x: Tensor, y: Tensor, rho: float, tol: float = 1e-6, max_iter: int = 50) -> Tensor:
    """The proximal step ``argmin_u 1/2 ||A u - y||^2 + rho/2 ||u - x||^2``, i.e.
    ``(A^T A + rho I) u = A^T y + rho x`` by conjugate gradient (warm-started at ``x``)."""
    return conjugate_gradient(lambda u: op.adjoint(op.forward(u)) + rho * u, op.adjoint(y) + rho * x,
                              x0=x, tol=tol, max_iter=max_iter)


class DataConsistency(DenoiserWrapper):
    """A pass-through denoiser wrapper whose :meth:`post_step` enforces the measurements.

    At the state x (at time t), with y_t = alpha_t y + sigma_t A z (the measurement taken to
    the state's noise level, fresh z; ``noisy=False`` uses y itself), the step is
    x <- x + weight (u - x), with u the exact projection onto {A u = y_t} (``rho=None``,
    :func:`project_affine`) or the proximal step of weight ``rho`` (:func:`prox_data`, for noisy
    measurements or an ill-conditioned A). For a :class:`~workbench.operators.Mask` and
    ``weight=1`` the projection writes the re-noised observation into the observed entries (the
    projection form of Song et al. 2022's Eq. 9); at the end of sampling (t = t_end) the
    denoised estimate satisfies A x = y up to alpha_t, sigma_t of the last time.

    Args:
        denoiser: the unconditional denoiser (or another wrapper); predictions pass unchanged.
        operator: a :class:`~workbench.operators.ForwardOperator` (tensor states).
        y: the measurement ``A x + noise``.
        weight: in (0, 1]; 1 = the full projection / prox step.
        rho: None for the exact projection, else the prox weight (> 0).
        noisy: take y to the state's noise level before projecting (else project onto y).
        cg_iters, cg_tol: the conjugate-gradient solve.
        generator: for the re-noising noise.
    """

    def __init__(self, denoiser: nn.Module, operator: Any, y: Tensor, *, weight: float = 1.0,
                 rho: float | None = None, noisy: bool = True, cg_iters: int = 50, cg_tol: float = 1e-6,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(denoiser)
        if not (hasattr(operator, "forward") and hasattr(operator, "adjoint")):
            raise TypeError(f"DataConsistency needs a ForwardOperator (forward and adjoint), got {type(operator).__name__}")
        if not 0 < float(weight) <= 1:
            raise ValueError(f"DataConsistency weight must be in (0, 1], got {weight}")
        if rho is not None and not float(rho) > 0:
            raise ValueError(f"DataConsistency rho must be > 0 (or None for the exact projection), got {rho}")
        self.operator, self.y = operator, y
        self.weight, self.rho, self.noisy = float(weight), (None if rho is None else float(rho)), bool(noisy)
        self.cg_iters, self.cg_tol, self.generator = int(cg_iters), float(cg_tol), generator

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        return self.denoiser(x, t, geometry, **extras)

    def target(self, x: Tensor, t: Tensor) -> Tensor:
        """y_t: the measurement at the noise level of time ``t`` (y itself when ``noisy=False``)."""
        if not self.noisy:
            return self.y
        c = self.process.at(t, x, Euclidean())
        fa, fs = c.alpha.flatten(1), c.sigma.flatten(1)
        if not (torch.equal(fa, fa[:, :1].expand_as(fa)) and torch.equal(fs, fs[:, :1].expand_as(fs))):
            # y_t = alpha y + sigma A z needs one noise level per sample: with per-element levels
            # (a PerChannelProcess) alpha does not pass through the operator
            raise ValueError("DataConsistency(noisy=True) needs one noise level per sample, but the process's "
                             "coefficients vary within a sample (per-channel schedule); use noisy=False")
        a, s = fa[:, 0], fs[:, 0]
        z = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        az = self.operator.forward(z)
        shape = (-1, *([1] * (az.dim() - 1)))
        return a.view(shape).to(az.dtype) * self.y + s.view(shape).to(az.dtype) * az

    def post_step(self, x: State, t: Tensor, prediction: Prediction | None = None) -> State:
        """The samplers' ``post_step`` hook: x moved onto the measurements at time ``t``."""
        if not torch.is_tensor(x):
            raise TypeError("DataConsistency acts on tensor states (an operator maps a tensor)")
        yt = self.target(x, t)
        if self.rho is None:
            u = project_affine(self.operator, x, yt, tol=self.cg_tol, max_iter=self.cg_iters)
        else:
            u = prox_data(self.operator, x, yt, self.rho, tol=self.cg_tol, max_iter=self.cg_iters)
        return x + self.weight * (u - x) if self.weight != 1 else u

"""Batched solvers: conjugate gradient, regularised normal equations, ADMM-TV."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .base import ForwardOperator, inner
from .linear import FiniteDifference

__all__ = ["conjugate_gradient", "solve_regularized", "admm_tv", "soft_threshold"]


def _bview(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def conjugate_gradient(apply_A: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor | None = None,
                       tol: float = 1e-6, max_iter: int = 100) -> Tensor:
    """Solve ``A x = b`` for a symmetric positive (semi-)definite ``A``, per batch element.

    ``apply_A`` maps ``[B, ...] -> [B, ...]`` without mixing batch elements. Each element stops
    (its iterate is frozen) once ``||r|| <= tol * ||b||``; the loop ends when all have, or after
    ``max_iter`` iterations.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_A(x)
    p = r.clone()
    rs = inner(r, r)
    stop = tol ** 2 * inner(b, b)
    for _ in range(max_iter):
        active = rs > stop
        if not bool(active.any()):
            break
        ap = apply_A(p)
        pap = inner(p, ap)
        alpha = torch.where(active & (pap > 0), rs / torch.where(pap > 0, pap, torch.ones_like(pap)),
                            torch.zeros_like(rs))
        x = x + _bview(alpha, x) * p
        r = r - _bview(alpha, r) * ap
        rs_new = inner(r, r)
        beta = torch.where(active & (rs > 0), rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = r + _bview(beta, p) * p
        rs = torch.where(active, rs_new, rs)
    return x


def solve_regularized(op: ForwardOperator, b: Tensor, rho: float, diffs: Sequence[FiniteDifference],
                      x0: Tensor | None = None, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
    """Solve ``(A^T A + rho sum_d D_d^T D_d) x = b`` by :func:`conjugate_gradient`."""

    def apply(x: Tensor) -> Tensor:
        out = op.adjoint(op.forward(x))
        for d in diffs:
            out = out + rho * d.adjoint(d.forward(x))
        return out

    return conjugate_gradient(apply, b, x0=x0, tol=tol, max_iter=max_iter)


def soft_threshold(v: Tensor, t: float) -> Tensor:
    """``sign(v) max(|v| - t, 0)``, the proximal map of ``t |.|_1``."""
    return torch.sign(v) * torch.clamp(v.abs() - t, min=0)


def admm_tv(op: ForwardOperator, y: Tensor, rho: float = 1.0, lam: float = 0.05,
            axes: Sequence[int] = (-1,), iters: int = 50, x0: Tensor | None = None,
            cg_iters: int = 20, cg_tol: float = 1e-6) -> Tensor:
    """Anisotropic-TV reconstruction by ADMM (Boyd et al. 2011, Sec. 6.4.1):

        min_x 1/2 ||A x - y||^2 + lam sum_{d in axes} ||D_d x||_1

    with splitting ``z_d = D_d x`` and scaled duals ``u_d``::

        x <- (A^T A + rho sum D^T D)^{-1} (A^T y + rho sum D^T (z - u))   (CG, warm-started)
        z <- soft(D x + u, lam / rho)
        u <- u + D x - z

    ``axes`` are tensor dims of the batched image (e.g. ``(-3, -2, -1)`` for a volume). Starts at
    x = 0, as DiffusionMBIR's ``get_ADMM_TV`` does, unless ``x0`` is given (``A^T y`` is on the
    wrong scale unless A^T A is near the identity: for a CT projector its norm is about the number
    of views times the image side). This is the DiffusionMBIR-style baseline; it runs on
    batches, each element independently.
    """
    diffs = [FiniteDifference(a) for a in axes]
    aty = op.adjoint(y)
    x = torch.zeros_like(aty) if x0 is None else x0.clone()
    z = [d.forward(x) for d in diffs]
    u = [torch.zeros_like(zi) for zi in z]
    for _ in range(iters):
        rhs = aty
        for d, zi, ui in zip(diffs, z, u):
            rhs = rhs + rho * d.adjoint(zi - ui)
        x = solve_regularized(op, rhs, rho, diffs, x0=x, tol=cg_tol, max_iter=cg_iters)
        for i, d in enumerate(diffs):
            dx = d.forward(x)
            z[i] = soft_threshold(dx + u[i], lam / rho)
            u[i] = u[i] + dx - z[i]
    return x

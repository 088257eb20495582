"""The operator contract: a linear map ``A`` with its adjoint and a measurement noise level."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

__all__ = ["ForwardOperator", "LinearOperator", "check_adjoint", "inner"]


@runtime_checkable
class ForwardOperator(Protocol):
    """A linear measurement operator y = A x + noise, with its adjoint.

    ``forward`` and ``adjoint`` act on batched tensors ``[B, ...]`` (the batch dim is never mixed).
    ``noise_std`` is the standard deviation of the measurement noise (0 for noiseless data).
    """

    noise_std: float

    def forward(self, x: Tensor) -> Tensor: ...

    def adjoint(self, y: Tensor) -> Tensor: ...


class LinearOperator:
    """Convenience base for :class:`ForwardOperator` implementations.

    Subclasses define ``forward`` and ``adjoint``; calling the operator applies ``forward`` (so it
    can be handed to :class:`workbench.guidance.DPS` as ``operator``), ``normal`` applies A^T A.
    """

    noise_std: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def normal(self, x: Tensor) -> Tensor:
        """A^T A x."""
        return self.adjoint(self.forward(x))


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product per batch element, ``Re sum(conj(a) * b)`` over all dims but the first."""
    p = (a.conj() * b) if (a.is_complex() or b.is_complex()) else a * b
    return p.real.flatten(1).sum(1) if p.is_complex() else p.flatten(1).sum(1)


def check_adjoint(op: ForwardOperator, x_shape: Sequence[int], y_shape: Sequence[int] | None = None,
                  dtype: torch.dtype = torch.float64, seed: int = 0) -> float:
    """Relative mismatch ``|<A x, y> - <x, A^T y>| / (|A x| |y|)`` for random ``x``, ``y``.

    ``x`` is drawn in ``dtype`` (float64 by default); ``y`` takes the shape (unless ``y_shape`` is
    given) and the dtype of ``A x``, so complex measurements get complex ``y``. Inner products are
    real (``Re <a, b>``), which is the adjoint convention for real-to-complex maps. A correct adjoint
    gives a value near machine precision (~1e-15 in float64).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(x_shape), dtype=dtype, generator=g)
    ax = op.forward(x)
    shape = tuple(y_shape) if y_shape is not None else tuple(ax.shape)
    if ax.is_complex():
        y = torch.complex(torch.randn(shape, dtype=dtype, generator=g), torch.randn(shape, dtype=dtype, generator=g))
    else:
        y = torch.randn(shape, dtype=ax.dtype, generator=g)
    aty = op.adjoint(y)
    lhs = inner(ax.reshape(1, -1), y.reshape(1, -1))
    rhs = inner(x.reshape(1, -1), aty.reshape(1, -1))
    scale = ax.abs().norm() * y.abs().norm() + torch.finfo(dtype).tiny
    return float((lhs - rhs).abs().item() / scale.item())

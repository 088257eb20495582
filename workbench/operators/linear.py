"""Generic linear operators on batched tensors ``[B, ...]``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["Mask", "FourierSubsample", "FiniteDifference", "cartesian_mask"]


class Mask(LinearOperator):
    """Inpainting: keep entries where ``mask == 1``, zero the rest (self-adjoint, A^T A = A).

    ``mask`` broadcasts against ``x`` (e.g. ``[H, W]`` or ``[B, C, H, W]``). Measurements keep the
    full shape, zero-filled where unobserved.
    """

    def __init__(self, mask: Tensor, noise_std: float = 0.0):
        self.mask, self.noise_std = mask, noise_std

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return y * self.mask.to(y)


class FourierSubsample(LinearOperator):
    """Single-coil Cartesian MRI: ``y = M * F x`` with ``F`` the orthonormal 2-D FFT over the last
    two dims and ``M`` a 0/1 k-space mask broadcasting against ``[..., H, W]``. k-space is
    centred (``fftshift``: the DC term at ``[H // 2, W // 2]``), as :func:`cartesian_mask` assumes.

    Complex convention: ``y`` is complex, zero-filled where unsampled. For a real image
    (``real=True``, the default) the operator is the real-to-complex map and its adjoint is taken
    with respect to the real inner product ``Re <a, b>``, i.e. ``A^T y = Re(F^H (M * y))``. With
    ``real=False`` images are complex and ``A^T y = F^H (M * y)``. ``adjoint(y)`` of fully sampled
    data is the zero-filled reconstruction.
    """

    def __init__(self, mask: Tensor, noise_std: float = 0.0, real: bool = True):
        self.mask, self.noise_std, self.real = mask, noise_std, real

    def forward(self, x: Tensor) -> Tensor:
        k = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
        return k * self.mask.to(k.real.dtype).to(k.device)

    def adjoint(self, y: Tensor) -> Tensor:
        k = torch.fft.ifftshift(y * self.mask.to(y.real.dtype).to(y.device), dim=(-2, -1))
        x = torch.fft.ifft2(k, norm="ortho")
        return x.real if self.real else x


def cartesian_mask(shape: Sequence[int], acceleration: float, center_fraction: float = 0.08,
                   seed: int = 0) -> Tensor:
    """A reproducible Cartesian undersampling mask ``[H, W]`` of 0/1 floats.

    Whole phase-encoding lines (columns, the last dim) are kept: the central
    ``round(W * center_fraction)`` lines always, then random other lines until
    ``round(W / acceleration)`` are kept in total. The same ``seed`` gives the same mask.
    """
    h, w = int(shape[-2]), int(shape[-1])
    n_keep = max(1, min(w, round(w / acceleration)))
    n_center = min(n_keep, round(w * center_fraction))
    cols = torch.zeros(w, dtype=torch.bool)
    start = (w - n_center) // 2
    cols[start:start + n_center] = True
    rest = torch.nonzero(~cols).flatten()
    g = torch.Generator().manual_seed(seed)
    cols[rest[torch.randperm(rest.numel(), generator=g)[:n_keep - n_center]]] = True
    return cols.to(torch.float32).expand(h, w).clone()


class FiniteDifference(LinearOperator):
    """Forward differences along one tensor dim: ``(D x)_i = x_{i+1} - x_i``, ``i < n - 1``.

    The output is one shorter along ``axis`` (no boundary term, i.e. Neumann); the adjoint is
    ``(D^T y)_i = y_{i-1} - y_i`` with ``y_{-1} = y_{n-1} = 0``. ``axis`` indexes the batched
    tensor (``axis=-1`` is the last dim; never use 0, the batch dim).
    """

    def __init__(self, axis: int):
        if axis == 0:
            raise ValueError("FiniteDifference: axis 0 is the batch dim")
        self.axis, self.noise_std = axis, 0.0

    def forward(self, x: Tensor) -> Tensor:
        return torch.diff(x, dim=self.axis)

    def adjoint(self, y: Tensor) -> Tensor:
        shape = list(y.shape)
        shape[self.axis] = 1
        z = y.new_zeros(shape)
        yp = torch.cat([z, y, z], dim=self.axis)
        n = yp.shape[self.axis]
        return yp.narrow(self.axis, 0, n - 1) - yp.narrow(self.axis, 1, n - 1)

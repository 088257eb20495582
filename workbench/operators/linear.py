"""Generic linear operators on batched tensors ``[B, ...]``."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["Mask", "FourierSubsample", "FiniteDifference", "cartesian_mask", "mri_mask", "MRI_MASK_KINDS"]


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


MRI_MASK_KINDS = ("uniform1d", "gaussian1d", "gaussian2d")


def _center_band(w: int, center_fraction: float) -> Tensor:
    """Boolean ``[w]``: ``round(w * center_fraction)`` lines around the DC line ``w // 2``."""
    n = max(0, min(w, round(w * center_fraction)))
    band = torch.zeros(w, dtype=torch.bool)
    start = min(max(0, w // 2 - n // 2), w - n)
    band[start:start + n] = True
    return band


def _gaussian(n: int, std: float) -> Tensor:
    """Unnormalised Gaussian weights over ``0..n-1`` centred at ``n // 2`` (float64)."""
    d = torch.arange(n, dtype=torch.float64) - n // 2
    return torch.exp(-0.5 * (d / std) ** 2)


def mri_mask(kind: str, shape: Sequence[int], acceleration: float, center_fraction: float = 0.08,
             seed: int = 0) -> Tensor:
    """A reproducible single-coil Cartesian k-space mask ``[H, W]`` (0/1 float32, centred k-space as
    :class:`FourierSubsample` uses), after DiffusionMBIR's ``utils.get_mask``:

    - ``uniform1d``: whole phase-encoding lines (columns); a centre band of
      ``round(W * center_fraction)`` lines around the DC line ``W // 2``, then uniformly random
      other lines;
    - ``gaussian1d``: the same centre band, then other lines drawn with a Gaussian density
      centred on the DC line with std ``W * 15 / 128``;
    - ``gaussian2d``: single k-space points drawn with a 2-D Gaussian density centred on DC with
      per-axis variance ``n * (1.5 / 128) * n`` (``n`` = H or W); no centre band (as the reference).

    ``round(W / acceleration)`` lines (1-D) or ``round(H * W / acceleration)`` points (2-D) are
    kept in total, exactly: unlike the reference, which draws with replacement (so it keeps fewer
    than it asks for), lines and points are drawn without replacement (weighted by the density,
    ``torch.multinomial``). Randomness comes from a ``torch.Generator`` seeded with ``seed``; the
    global RNGs are untouched, and the same arguments give the same mask.
    """
    if kind not in MRI_MASK_KINDS:
        raise ValueError(f"mri_mask: unknown kind {kind!r} (one of {', '.join(MRI_MASK_KINDS)})")
    if not acceleration >= 1:
        raise ValueError(f"mri_mask: acceleration must be >= 1, got {acceleration}")
    h, w = int(shape[-2]), int(shape[-1])
    g = torch.Generator().manual_seed(int(seed))
    if kind == "gaussian2d":
        n_keep = max(1, min(h * w, round(h * w / acceleration)))
        dens = (_gaussian(h, math.sqrt(h * (1.5 / 128) * h))[:, None]
                * _gaussian(w, math.sqrt(w * (1.5 / 128) * w))[None, :]).flatten()
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[torch.multinomial(dens, n_keep, replacement=False, generator=g)] = True
        return mask.view(h, w).to(torch.float32)
    n_keep = max(1, min(w, round(w / acceleration)))
    cols = _center_band(w, center_fraction)
    if int(cols.sum()) > n_keep:
        raise ValueError(f"mri_mask: the centre band ({int(cols.sum())} lines) exceeds the "
                         f"{n_keep} lines of acceleration {acceleration}")
    rest = torch.nonzero(~cols).flatten()
    n_rest = n_keep - int(cols.sum())
    if n_rest > 0:
        if kind == "uniform1d":
            pick = torch.randperm(rest.numel(), generator=g)[:n_rest]
        else:
            dens = _gaussian(w, w * 15.0 / 128)[rest]
            pick = torch.multinomial(dens, n_rest, replacement=False, generator=g)
        cols[rest[pick]] = True
    return cols.to(torch.float32).expand(h, w).clone()


def cartesian_mask(shape: Sequence[int], acceleration: float, center_fraction: float = 0.08,
                   seed: int = 0) -> Tensor:
    """``mri_mask("uniform1d", ...)``: whole random lines plus a centre band, ``[H, W]`` 0/1 floats.

    The central ``round(W * center_fraction)`` lines (around the DC line ``W // 2``) always, then
    random other lines until ``round(W / acceleration)`` are kept in total. The same ``seed``
    gives the same mask.
    """
    return mri_mask("uniform1d", shape, acceleration, center_fraction, seed)


class FiniteDifference(LinearOperator):
    """Forward differences along one tensor dim: ``(D x)_i = x_{i+1} - x_i``.

    ``periodic=False`` (default): ``i < n - 1``, the output one shorter along ``axis`` (no boundary
    term, i.e. Neumann); the adjoint is ``(D^T y)_i = y_{i-1} - y_i`` with ``y_{-1} = y_{n-1} = 0``.
    ``periodic=True``: ``x_n = x_0`` (wrap), same shape as x; adjoint ``(D^T y)_i = y_{i-1} - y_i``
    with ``y_{-1} = y_{n-1}`` (DiffusionMBIR's D_z).

    ``axis`` indexes the batched tensor (``axis=-1`` is the last dim). Axis 0 is the batch dim,
    whose elements the solvers treat as independent problems, and is refused unless
    ``whole_tensor=True`` says the tensor is one problem (e.g. a volume whose slices are the batch
    of a 2-D prior, differenced along the slices).
    """

    def __init__(self, axis: int, periodic: bool = False, whole_tensor: bool = False):
        if axis == 0 and not whole_tensor:
            raise ValueError("FiniteDifference: axis 0 is the batch dim (whole_tensor=True if the tensor is one problem)")
        self.axis, self.periodic, self.noise_std = int(axis), bool(periodic), 0.0

    def forward(self, x: Tensor) -> Tensor:
        if self.periodic:
            return torch.roll(x, -1, self.axis) - x
        return torch.diff(x, dim=self.axis)

    def adjoint(self, y: Tensor) -> Tensor:
        if self.periodic:
            return torch.roll(y, 1, self.axis) - y
        return diff_adjoint(y, self.axis)


def diff_adjoint(y: Tensor, axis: int) -> Tensor:
    """Adjoint of ``torch.diff(x, dim=axis)`` (forward differences without a boundary term):
    ``(D^T y)_i = y_{i-1} - y_i`` with ``y_{-1} = y_{n-1} = 0``, one longer along ``axis``."""
    shape = list(y.shape)
    shape[axis] = 1
    z = y.new_zeros(shape)
    yp = torch.cat([z, y, z], dim=axis)
    n = yp.shape[axis]
    return yp.narrow(axis, 0, n - 1) - yp.narrow(axis, 1, n - 1)

"""Geometries: how noise is drawn, projected, broadcast and reduced.

The core never calls ``torch.randn_like``, never indexes with
``[:, None, None]`` and never averages over all dimensions: it asks the
geometry. A geometry may carry a per-item *mask* for padded items (nodes of a
graph, time steps of a series); :meth:`Geometry.bind` returns a copy bound to
the mask of the current batch.

Masks have shape ``[B, *item]`` where ``item`` is a prefix of the non-batch
dimensions of the state (``[B, N]`` for node features ``[B, N, F]``); they are
broadcast by appending trailing dimensions. :class:`Symmetric` turns a node
mask ``[B, N]`` into the pairwise mask ``[B, N, N]``.
"""
from __future__ import annotations

import copy
from typing import Literal, Mapping

import torch
from torch import Tensor

from .state import State

__all__ = ["Geometry", "Euclidean", "Masked", "Symmetric", "Periodic", "ZeroCoM", "Product"]

Reduction = Literal["mean", "sum"]


def _append_dims(v: Tensor, ndim: int) -> Tensor:
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} to {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


class Geometry:
    """Base geometry: Euclidean space, optionally with a mask of valid items.

    Args:
        mask: optional ``[B, *item]`` bool/float mask of valid items.
    """

    def __init__(self, mask: Tensor | None = None) -> None:
        self.mask = mask

    # -- binding -----------------------------------------------------------------
    def bind(self, mask: Tensor | Mapping[str, Tensor] | None) -> "Geometry":
        """A copy of this geometry bound to the mask of a batch."""
        g = copy.copy(self)
        g.mask = mask
        return g

    def _mask(self, x: Tensor) -> Tensor | None:
        m = self.mask
        if m is None:
            return None
        if isinstance(m, Mapping):
            raise TypeError(f"{type(self).__name__} got a dict of masks; use Product for dict states")
        if m.shape[0] != x.shape[0] or tuple(m.shape[1:]) != tuple(x.shape[1 : m.ndim]):
            raise ValueError(
                f"mask of shape {tuple(m.shape)} does not fit a state of shape {tuple(x.shape)}"
            )
        return _append_dims(m.to(x.dtype), x.ndim)

    # -- tensor-level formulas (override these) --------------------------------------
    def _randn(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        m = self._mask(x)
        return z if m is None else z * m

    def _project(self, x: Tensor) -> Tensor:
        m = self._mask(x)
        return x if m is None else x * m

    def _reduce(self, err: Tensor, reduction: Reduction) -> Tensor:
        m = self._mask(err)
        flat = (err if m is None else err * m).flatten(1)
        total = flat.sum(1)
        if reduction == "sum":
            return total
        return total / self._dims(err)

    def _dims(self, x: Tensor) -> Tensor:
        m = self._mask(x)
        if m is None:
            return torch.full((x.shape[0],), float(x[0].numel()), device=x.device, dtype=x.dtype)
        return m.expand_as(x).flatten(1).sum(1).clamp_min(1.0)

    # -- public API: works on Tensors and dict states ---------------------------------
    def randn_like(self, x: State, generator: torch.Generator | None = None) -> State:
        """Standard Gaussian noise of the geometry, shaped like ``x``."""
        if isinstance(x, Mapping):
            return {k: self._for(k)._randn(v, generator) for k, v in x.items()}
        return self._randn(x, generator)

    def project(self, x: State) -> State:
        """Map ``x`` back onto the constraint set (masking, symmetry, wrapping)."""
        if isinstance(x, Mapping):
            return {k: self._for(k)._project(v) for k, v in x.items()}
        return self._project(x)

    def expand(self, t: Tensor | float | Mapping[str, Tensor], x: State) -> State:
        """Broadcast a per-sample value ``t`` (``[B]``, scalar, or a dict of those) to ``x``."""
        if isinstance(x, Mapping):
            return {k: self.expand(t[k] if isinstance(t, Mapping) else t, v) for k, v in x.items()}
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t has {t.shape[0]} entries but the state has batch size {x.shape[0]}")
        return _append_dims(t.to(x.dtype), x.ndim)

    def reduce(self, err: State, reduction: Reduction = "mean") -> Tensor:
        """Per-element values -> per-sample ``[B]``: mean (or sum) over valid entries.

        For a dict state the per-variable values are added.
        """
        if isinstance(err, Mapping):
            return sum(self._for(k)._reduce(v, reduction) for k, v in err.items())
        return self._reduce(err, reduction)

    def reduce_parts(self, err: State, reduction: Reduction = "mean") -> dict[str, Tensor]:
        """Per-variable per-sample reductions (for logging the parts of a loss)."""
        if isinstance(err, Mapping):
            return {k: self._for(k)._reduce(v, reduction) for k, v in err.items()}
        return {"x": self._reduce(err, reduction)}

    def dims(self, x: State) -> Tensor:
        """Number of free dimensions per sample ``[B]`` (for log-densities and bits/dim)."""
        if isinstance(x, Mapping):
            return sum(self._for(k)._dims(v) for k, v in x.items())
        return self._dims(x)

    def _for(self, key: str) -> "Geometry":
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(masked={self.mask is not None})"


class Euclidean(Geometry):
    """Plain R^d; with a mask, padded items get no noise and no loss."""


class Masked(Euclidean):
    """Euclidean space with a required per-item mask (padded nodes, missing steps)."""

    def _mask(self, x: Tensor) -> Tensor | None:
        if self.mask is None:
            raise ValueError("Masked geometry used without a mask: call geometry.bind(mask) first")
        return super()._mask(x)


class Symmetric(Geometry):
    """Symmetric matrices with zero diagonal (adjacency), ``x: [B, N, N]`` or ``[B, N, N, C]``.

    Noise is ``triu(z, 1) + triu(z, 1)^T``, masked by the node mask ``[B, N]``
    (turned into a pairwise mask), so the per-entry variance off the diagonal is 1.
    """

    def _pair_mask(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        off = 1.0 - torch.eye(n, device=x.device, dtype=x.dtype)
        m = self.mask
        if m is None:
            pm = off.expand(x.shape[0], n, n)
        elif m.ndim == 2:
            m = m.to(x.dtype)
            pm = m[:, :, None] * m[:, None, :] * off
        else:
            pm = m.to(x.dtype) * off
        return _append_dims(pm, x.ndim)

    def _check(self, x: Tensor) -> None:
        if x.ndim < 3 or x.shape[1] != x.shape[2]:
            raise ValueError(f"Symmetric geometry needs [B, N, N, ...] states, got {tuple(x.shape)}")

    def _randn(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        self._check(x)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = torch.triu(z.movedim(1, -1).movedim(1, -1), 1)  # to [B, ..., N, N]
        z = (z + z.transpose(-1, -2)).movedim(-1, 1).movedim(-1, 1)
        return z * self._pair_mask(x)

    def _project(self, x: Tensor) -> Tensor:
        self._check(x)
        return 0.5 * (x + x.transpose(1, 2)) * self._pair_mask(x)

    def _reduce(self, err: Tensor, reduction: Reduction) -> Tensor:
        pm = self._pair_mask(err)
        total = (err * pm).flatten(1).sum(1)
        if reduction == "sum":
            return total
        return total / self._dims(err)

    def _dims(self, x: Tensor) -> Tensor:
        # Entries counted over the full matrix (both triangles), as the loss sums them.
        return self._pair_mask(x).expand_as(x).flatten(1).sum(1).clamp_min(1.0)


class Periodic(Geometry):
    """A flat torus ``[0, period)^d`` (fractional coordinates, angles).

    Noise is Gaussian in the tangent space; :meth:`project` wraps back into
    ``[0, period)``. :meth:`wrap` maps a difference into ``[-period/2, period/2)``.
    """

    def __init__(self, period: float = 1.0, mask: Tensor | None = None) -> None:
        super().__init__(mask)
        self.period = float(period)

    def _project(self, x: Tensor) -> Tensor:
        return super()._project(torch.remainder(x, self.period))

    def wrap(self, d: State) -> State:
        p = self.period
        if isinstance(d, Mapping):
            return {k: self.wrap(v) for k, v in d.items()}
        return torch.remainder(d + 0.5 * p, p) - 0.5 * p

    def __repr__(self) -> str:
        return f"Periodic(period={self.period:g}, masked={self.mask is not None})"


class ZeroCoM(Geometry):
    """Point clouds ``[B, N, D]`` with zero centre of mass over the valid nodes (E(3) models)."""

    def _centre(self, x: Tensor) -> Tensor:
        m = self._mask(x)
        if m is None:
            return x - x.mean(1, keepdim=True)
        n = m.sum(1, keepdim=True).clamp_min(1.0)
        return (x - (x * m).sum(1, keepdim=True) / n) * m

    def _randn(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._centre(super()._randn(x, generator))

    def _project(self, x: Tensor) -> Tensor:
        return self._centre(x)

    def _dims(self, x: Tensor) -> Tensor:
        # One node's worth of dimensions is removed by the constraint.
        return super()._dims(x) - x.shape[-1]


class Product(Geometry):
    """One geometry per variable of a dict state, e.g. ``{"x": Masked(), "adj": Symmetric()}``.

    A single node mask passed to :meth:`bind` is given to every part; a dict of
    masks is split by key.
    """

    def __init__(self, parts: Mapping[str, Geometry] | None = None, **kwargs: Geometry) -> None:
        super().__init__(None)
        self.parts = dict(parts or {}, **kwargs)
        if not self.parts:
            raise ValueError("Product geometry needs at least one part")

    def bind(self, mask: Tensor | Mapping[str, Tensor] | None) -> "Product":
        g = copy.copy(self)
        g.mask = mask
        g.parts = {
            k: p.bind(mask.get(k) if isinstance(mask, Mapping) else mask) for k, p in self.parts.items()
        }
        return g

    def _for(self, key: str) -> Geometry:
        try:
            return self.parts[key]
        except KeyError:
            raise KeyError(f"Product geometry has no part for state key {key!r}; parts: {list(self.parts)}")

    def _tensor_error(self, *_: object) -> None:
        raise TypeError("Product geometry works on dict states only")

    _randn = _project = _reduce = _dims = _tensor_error  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Product(" + ", ".join(f"{k}={p!r}" for k, p in self.parts.items()) + ")"

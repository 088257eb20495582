"""Geometries: how noise is drawn, points and tangent vectors projected, values broadcast and reduced.

The core never calls ``torch.randn_like``, never indexes with ``[:, None, None]`` and never
averages over all dimensions: it asks the geometry. The whole contract the core relies on is
:class:`GeometryProtocol` (public names only); :class:`Geometry` is a convenient base that
implements it from four tensor-level formulas.

**Points and tangent vectors.** A state ``x`` is a *point*; noise, scores, gradients and
Hutchinson probes are *tangent vectors* at a point. :meth:`Geometry.project` maps a point onto
the constraint set (wraps onto the torus, zeroes padding, symmetrises);
:meth:`Geometry.project_tangent` maps a vector onto the tangent space (zeroes padding,
symmetrises, removes the centre of mass) and never wraps: a gradient of -3.56 on a torus of
period 1 stays -3.56.

**The mask rule.** A batch's ``mask`` says which entries *exist* (padded nodes, missing values,
padded time steps): absent entries get no noise, no loss and no density. It is aligned to a state
``[B, *S]`` by :func:`align_mask`: a mask ``[B, *M]`` with ``M`` a prefix of ``S`` is broadcast by
appending trailing dimensions (a node mask ``[B, N]`` for node features ``[B, N, F]``); with
``M`` a suffix of ``S`` (``[B, D, H, W]`` for a volume ``[B, C, D, H, W]``) singleton
dimensions are inserted after the batch; a mask with as many dimensions as the state broadcasts
its size-1 dimensions (``[B, 1, D, H, W]``). Prefix wins when both fit. An *observation* mask
(which entries are measured, for inpainting / guidance) is a different thing, never called
``mask``: it is a named argument (``Replacement(observed=..., obs_mask=...)``) or batch key
(``observed``), aligned by the same rule. :class:`Symmetric` turns a node mask ``[B, N]`` into
the pairwise mask ``[B, N, N]``.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Mapping, Protocol, runtime_checkable

import torch
from torch import Tensor

from .state import State

__all__ = ["GeometryProtocol", "Geometry", "Euclidean", "Masked", "Symmetric", "Periodic", "ZeroCoM", "Product",
           "align_mask", "reduce_parts"]

Reduction = Literal["mean", "sum"]


def _append_dims(v: Tensor, ndim: int) -> Tensor:
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} to {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def align_mask(mask: Tensor, x: Tensor, name: str = "mask") -> Tensor:
    """Align a mask ``[B, *M]`` to a state ``[B, *S]`` by the module's mask rule; returns a view
    with ``x.ndim`` dimensions that broadcasts against ``x`` (same dtype as ``x``).

    Raises ValueError naming both shapes when the mask fits neither as a prefix, a suffix nor
    by size-1 broadcasting.
    """
    if not torch.is_tensor(mask):
        mask = torch.as_tensor(mask)
    m = mask.to(device=x.device, dtype=x.dtype)
    s, ms = tuple(x.shape), tuple(m.shape)
    if m.ndim == x.ndim:
        if all(a == b or a == 1 for a, b in zip(ms, s)):
            return m
    elif 1 <= m.ndim < x.ndim and ms[0] in (s[0], 1):
        k = m.ndim - 1
        if ms[1:] == s[1 : 1 + k]:            # items first: [B, N] for [B, N, F]
            return m.reshape(*ms, *([1] * (x.ndim - m.ndim)))
        if k and ms[1:] == s[x.ndim - k :]:   # trailing: [B, D, H, W] for [B, C, D, H, W]
            return m.reshape(ms[0], *([1] * (x.ndim - m.ndim)), *ms[1:])
    raise ValueError(f"{name} of shape {ms} does not fit a state of shape {s}: it must be [B, *items] with the "
                     "state's leading item dims, [B, *trailing] with its trailing dims, or the state's shape "
                     "with size-1 dims")


@runtime_checkable
class GeometryProtocol(Protocol):
    """Everything the core calls on a geometry. Each method takes a Tensor or a dict State.

    * ``bind(mask)``: a copy bound to a batch's existence mask (Tensor, dict of Tensors, or None);
    * ``part(key)``: the geometry of one variable of a dict State (itself for a single variable);
    * ``randn_like(x, generator)``: standard noise in the tangent space at ``x`` (zero on absent entries);
    * ``project(x)``: a point onto the constraint set (idempotent);
    * ``project_tangent(v)``: a tangent vector onto the tangent space (linear, idempotent, never wraps);
    * ``expand(t, x)``: a per-sample value ``[B]`` (or scalar, or dict of those) broadcast to ``x``;
      also a per-element value ``[B, *K]`` (per-element noise schedules), trailing singleton dims
      appended, each dim of ``K`` 1 or the state's size;
    * ``reduce(err, reduction)``: per-element values to per-sample ``[B]``, ``"mean"`` or ``"sum"``
      over existing entries (a dict State's variables are added);
    * ``dims(x)``: the number of free dimensions per sample ``[B]``.
    """

    def bind(self, mask: Any) -> "GeometryProtocol": ...

    def part(self, key: str) -> "GeometryProtocol": ...

    def randn_like(self, x: State, generator: torch.Generator | None = None) -> State: ...

    def project(self, x: State) -> State: ...

    def project_tangent(self, v: State) -> State: ...

    def expand(self, t: Any, x: State) -> State: ...

    def reduce(self, err: State, reduction: Reduction = "mean") -> Tensor: ...

    def dims(self, x: State) -> Tensor: ...


def reduce_parts(geometry: GeometryProtocol, err: State, reduction: Reduction = "mean") -> dict[str, Tensor]:
    """Per-variable per-sample reductions ``{key: [B]}`` (``{"x": [B]}`` for a Tensor state)."""
    if isinstance(err, Mapping):
        return {k: geometry.part(k).reduce(v, reduction) for k, v in err.items()}
    return {"x": geometry.reduce(err, reduction)}


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
        return align_mask(m, x)

    # -- tensor-level formulas (override these) --------------------------------------
    def _randn(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        m = self._mask(x)
        return z if m is None else z * m

    def _project(self, x: Tensor) -> Tensor:
        m = self._mask(x)
        return x if m is None else x * m

    def _project_tangent(self, v: Tensor) -> Tensor:
        # a linear constraint set: points and vectors are projected alike (override for manifolds)
        return self._project(v)

    def _reduce(self, err: Tensor, reduction: Reduction) -> Tensor:
        m = self._mask(err)
        flat = (err if m is None else (err * m).expand_as(err)).flatten(1)
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
            return {k: self.part(k).randn_like(v, generator) for k, v in x.items()}
        return self._randn(x, generator)

    def project(self, x: State) -> State:
        """Map a point ``x`` onto the constraint set (masking, symmetry, wrapping onto a torus)."""
        if isinstance(x, Mapping):
            return {k: self.part(k).project(v) for k, v in x.items()}
        return self._project(x)

    def project_tangent(self, v: State) -> State:
        """Map a tangent vector (noise, score, gradient, probe) onto the tangent space; never wraps."""
        if isinstance(v, Mapping):
            return {k: self.part(k).project_tangent(u) for k, u in v.items()}
        return self._project_tangent(v)

    def expand(self, t: Tensor | float | Mapping[str, Tensor], x: State) -> State:
        """Broadcast a value ``t`` to ``x`` (a dict of values to a dict State, key by key).

        ``t`` is a scalar, a per-sample value ``[B]`` or a per-element value ``[B, *K]`` (per-element
        noise schedules: ``[B, C]`` per channel, or the state's full shape); trailing singleton
        dimensions are appended, and each dimension of ``K`` must be 1 or the state's size there.
        The result broadcasts against ``x`` (it is not materialised to ``x``'s shape).
        """
        if isinstance(x, Mapping):
            return {k: self.expand(t[k] if isinstance(t, Mapping) else t, v) for k, v in x.items()}
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t has {t.shape[0]} entries but the state has batch size {x.shape[0]}")
        if t.ndim > 1 and (t.ndim > x.ndim or any(a not in (1, b) for a, b in zip(t.shape[1:], x.shape[1:]))):
            raise ValueError(f"a per-element value of shape {tuple(t.shape)} does not broadcast to a state of "
                             f"shape {tuple(x.shape)}: each dim after the batch must be 1 or the state's size")
        return _append_dims(t.to(x.dtype), x.ndim)

    def reduce(self, err: State, reduction: Reduction = "mean") -> Tensor:
        """Per-element values -> per-sample ``[B]``: mean (or sum) over valid entries.

        For a dict state the per-variable values are added.
        """
        if isinstance(err, Mapping):
            return sum(self.part(k).reduce(v, reduction) for k, v in err.items())
        return self._reduce(err, reduction)

    def reduce_parts(self, err: State, reduction: Reduction = "mean") -> dict[str, Tensor]:
        """Per-variable per-sample reductions (for logging the parts of a loss)."""
        return reduce_parts(self, err, reduction)

    def dims(self, x: State) -> Tensor:
        """Number of free dimensions per sample ``[B]`` (for log-densities and bits/dim)."""
        if isinstance(x, Mapping):
            return sum(self.part(k).dims(v) for k, v in x.items())
        return self._dims(x)

    def part(self, key: str) -> "Geometry":
        """The geometry of variable ``key`` of a dict State (this geometry for every key)."""
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

    Noise is Gaussian in the tangent space (R^d); :meth:`project` wraps a point back into
    ``[0, period)``, :meth:`project_tangent` leaves vectors unwrapped (masking only).
    :meth:`wrap` maps a difference into ``[-period/2, period/2)``.
    """

    def __init__(self, period: float = 1.0, mask: Tensor | None = None) -> None:
        super().__init__(mask)
        self.period = float(period)

    def _project(self, x: Tensor) -> Tensor:
        return super()._project(torch.remainder(x, self.period))

    def _project_tangent(self, v: Tensor) -> Tensor:
        return Geometry._project(self, v)

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

    def part(self, key: str) -> Geometry:
        try:
            return self.parts[key]
        except KeyError:
            raise KeyError(f"Product geometry has no part for state key {key!r}; parts: {list(self.parts)}") from None

    def _tensor_error(self, *_: object) -> None:
        raise TypeError("Product geometry works on dict states only")

    _randn = _project = _project_tangent = _reduce = _dims = _tensor_error  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Product(" + ", ".join(f"{k}={p!r}" for k, p in self.parts.items()) + ")"

"""States: a Tensor, or a dict of named Tensors (a system of variables).

Every sampler, loss and guidance wrapper in the core manipulates states only
through the helpers below, so the same code runs on an image-like tensor
``[B, ...]`` and on a graph ``{"x": [B, N, F], "adj": [B, N, N]}``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import torch
from torch import Tensor

__all__ = ["State", "tree_map", "batch_size", "keys_of", "to_device", "cat"]

State = Union[Tensor, Mapping[str, Tensor]]


def tree_map(fn: Callable[..., Tensor], *states: Any) -> Any:
    """Apply ``fn`` leaf-wise over states that share a structure.

    The first argument fixes the structure. Later arguments may be states of
    the same structure or plain values (scalars, tensors) which are passed to
    every leaf unchanged.

    Example:
        ``tree_map(lambda x, a, e: a * x + e, x, alpha, eps)``
    """
    first = states[0]
    if isinstance(first, Mapping):
        out = {}
        for key in first:
            args = [s[key] if isinstance(s, Mapping) else s for s in states]
            out[key] = fn(*args)
        return out
    for s in states[1:]:
        if isinstance(s, Mapping):
            raise TypeError("tree_map: the first state is a Tensor but a later one is a dict")
    return fn(*states)


def keys_of(x: State) -> list[str | None]:
    """Names of the variables of a state; ``[None]`` for a plain Tensor."""
    return list(x.keys()) if isinstance(x, Mapping) else [None]


def batch_size(x: State) -> int:
    """Leading (batch) dimension, checked to agree across the variables."""
    if isinstance(x, Mapping):
        sizes = {k: v.shape[0] for k, v in x.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"state variables disagree on the batch size: {sizes}")
        return next(iter(sizes.values()))
    return x.shape[0]


def to_device(x: Any, device: torch.device | str) -> Any:
    """Move a state (or any nested dict/list of tensors) to ``device``."""
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def cat(states: list[State]) -> State:
    """Concatenate states along the batch dimension."""
    if isinstance(states[0], Mapping):
        return {k: torch.cat([s[k] for s in states]) for k in states[0]}
    return torch.cat(states)

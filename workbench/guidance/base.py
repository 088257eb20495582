"""The one base of denoiser wrappers: a wrapper *is* a denoiser, so wrappers stack."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..state import State, tree_map

__all__ = ["DenoiserWrapper", "needs_graph", "maybe_detach"]


class DenoiserWrapper(nn.Module):
    """Base of guidance wrappers: holds the wrapped denoiser and forwards every attribute it does
    not define (``process``, ``prediction``, ``net`` ...) to it, so ``Replacement(SelfGuidance(
    CFG(denoiser)))`` exposes the same interface as the bare denoiser.

    A subclass implements ``forward(x, t, geometry, **extras) -> Prediction``. When ``x``
    already requires grad (an outer wrapper differentiates through this one), gradient-based
    wrappers keep their graph (:func:`needs_graph`), so stacked guidance terms differentiate
    through each other.
    """

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.denoiser, name)

    @property
    def base(self) -> nn.Module:
        """The innermost (unguided) denoiser."""
        d = self.denoiser
        return d.base if isinstance(d, DenoiserWrapper) else d


def needs_graph(x: State) -> bool:
    """Whether ``x`` is part of an outer autograd computation (an outer guidance gradient)."""
    leaves = [x] if torch.is_tensor(x) else list(x.values())
    return torch.is_grad_enabled() and any(v.requires_grad for v in leaves)


def maybe_detach(v: State, keep: bool) -> State:
    return v if keep else tree_map(lambda u: u.detach(), v)

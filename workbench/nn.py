"""Network building blocks shared by the domains' networks."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features of a scalar time: sin/cos(scale * t * f_k) with f_k geometric in [1, max_freq].

    ``t`` is ``[B]``; the output is ``[B, dim]`` (the sines, then the cosines).
    """

    def __init__(self, dim: int = 64, max_freq: float = 1000.0, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(max_freq), dim // 2)))
        self.scale = float(scale)

    def forward(self, t: Tensor) -> Tensor:
        a = (self.scale * t.float())[:, None] * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

"""The slice prior of DiffusionMBIR: a 2-D score network applied to every axial slice.

:class:`SlicePrior` follows NCSN++ (Song et al. 2021) as DiffusionMBIR configures it, built from
the core's :class:`workbench.nn.UNet` (``dims=2``): random Fourier features (scale 16) of
log(sigma(t)) as the time input, channel multipliers per level, residual blocks with GroupNorm
and SiLU, self-attention at the levels whose resolution is listed in ``attn_resolutions``, and
the output divided by sigma(t) (``scale_by_sigma``), so that the network's output is the score.

Use it with ``Denoiser(net, VE(sigma_min, sigma_max), prediction="score")``: with
``scale_by_sigma=True`` the raw output is h / sigma, the Denoiser's eps is then -h, i.e. the
same function class as an eps network whose output is -h (the score and eps parametrisations
are exact conversions of each other, :mod:`workbench.precond`). Train with
``DenoisingScoreMatching(weighting="sigma2")`` for Song's lambda(t) = sigma^2 weighting.

Not reproduced from NCSN++: FIR up/down-sampling (the UNet uses strided convolutions and
nearest-neighbour upsampling), BigGAN-style resampling residual blocks, the progressive
input/output branches and skip rescaling. The parametrisation, time input and output scaling
are NCSN++'s; the convolutional trunk is the core's UNet.

A volume ``[Z, 1, H, W]`` is a batch of Z slices. ``chunk`` pushes it through the network
``chunk`` slices at a time (DiffusionMBIR feeds its 2-D network 12 slices at a time to bound
memory); every layer acts on each slice separately (GroupNorm normalises per sample), so the
result does not depend on the chunk size.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from workbench.nn import UNet

__all__ = ["SlicePrior"]


class SlicePrior(nn.Module):
    """NCSN++-style 2-D score network for slices ``[B, C, H, W]`` under a VE process.

    Args:
        image_size: slice side length (used to place attention by resolution).
        channels: nf, the width of the first level (NCSN++ AAPM config: 128).
        channel_mult: width multipliers per level (NCSN++: (1, 2, 2, 2)).
        num_res_blocks: residual blocks per level (NCSN++: 4).
        attn_resolutions: spatial resolutions with self-attention (NCSN++: (16,)); a level
            ``i`` has resolution ``image_size // 2**i``.
        mid_attention: attention at the bottleneck (NCSN++ has it).
        sigma_min, sigma_max: the VE schedule sigma(t) = sigma_min (sigma_max / sigma_min)^t
            (must match the process); the network sees log(sigma(t)).
        fourier_scale: std of the random Fourier frequencies (NCSN++: 16).
        scale_by_sigma: divide the output by sigma(t) (NCSN++'s score scaling); use
            ``prediction="score"`` with it.
        time_input: ``"log_sigma"`` (NCSN++) or ``"t"`` (the time as the Denoiser gives it).
        chunk: push at most this many slices through the network at once (None: all).
        in_channels, groups, heads, dropout: as in :class:`workbench.nn.UNet`.
    """

    def __init__(self, image_size: int = 64, channels: int = 32, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (16,), mid_attention: bool = True,
                 sigma_min: float = 0.01, sigma_max: float = 90.0, fourier_scale: float = 16.0,
                 scale_by_sigma: bool = True, time_input: str = "log_sigma", chunk: int | None = None,
                 in_channels: int = 1, groups: int = 8, heads: int = 1, dropout: float = 0.0,
                 fourier_seed: int = 0) -> None:
        super().__init__()
        if time_input not in ("log_sigma", "t"):
            raise ValueError(f"SlicePrior: time_input must be 'log_sigma' or 't', got {time_input!r}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"SlicePrior: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"SlicePrior: chunk must be >= 1 or None, got {chunk}")
        depth = len(channel_mult) - 1
        if image_size % (2 ** depth):
            raise ValueError(f"SlicePrior: image_size {image_size} must be divisible by 2**{depth}")
        levels = [i for i in range(len(channel_mult)) if image_size // 2 ** i in set(attn_resolutions)]
        self.image_size, self.chunk = int(image_size), None if chunk is None else int(chunk)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.scale_by_sigma, self.time_input = bool(scale_by_sigma), time_input
        self.attention_levels = levels
        self.unet = UNet(in_channels, dims=2, channels=channels, channel_mult=tuple(channel_mult),
                         num_res_blocks=num_res_blocks, attention_levels=levels, mid_attention=mid_attention,
                         heads=heads, time_embedding="fourier", groups=groups, dropout=dropout)
        # the core UNet's Fourier features have std 16; set the requested scale with our own seed
        feats = self.unet.time[0]
        g = torch.Generator().manual_seed(int(fourier_seed))
        feats.weight.copy_(torch.randn(feats.weight.shape, generator=g) * float(fourier_scale))

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) of the VE schedule the network was built for."""
        return self.sigma_min * torch.exp(t * math.log(self.sigma_max / self.sigma_min))

    def _one(self, x: Tensor, t: Tensor) -> Tensor:
        log_sigma = math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)
        h = self.unet(x, log_sigma if self.time_input == "log_sigma" else t)
        if self.scale_by_sigma:
            h = h / torch.exp(log_sigma).to(h.dtype).reshape(-1, *([1] * (h.dim() - 1)))
        return h

    def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
        """x ``[B, C, H, W]`` (a volume: B = slices), t ``[B]`` or a scalar -> the score ``[B, C, H, W]``.

        ``extras`` (``mask``, ``cond``) are accepted and ignored: the prior is unconditional."""
        if x.dim() != 4:
            raise ValueError(f"SlicePrior expects slices [B, C, H, W], got shape {list(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t.reshape(x.shape[0])
        if self.chunk is None or x.shape[0] <= self.chunk:
            return self._one(x, t)
        return torch.cat([self._one(xc, tc) for xc, tc in zip(x.split(self.chunk), t.split(self.chunk))])

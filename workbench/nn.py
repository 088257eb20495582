"""Network building blocks shared by the domains' networks.

Time features (``SinusoidalEmbedding``, ``FourierFeatures``), embedding conditioning (``FiLM``,
``AdaGroupNorm``) and a time-conditioned ``UNet`` for 2-D images and 3-D volumes. Everything is
device-agnostic: buffers follow ``.to(device)``, nothing calls ``.cuda()``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "FourierFeatures", "FiLM", "AdaGroupNorm", "UNet"]


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


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar time (Tancik et al. 2020; Song et al. 2021's NCSN++).

    ``sin/cos(2 pi t w_k)`` with ``w_k ~ N(0, std^2)`` drawn once from a generator seeded with
    ``seed`` and kept as a buffer: not trained, saved in the state dict, the same in every process
    that builds the module with the same seed. ``t`` is ``[B]``; the output is ``[B, dim]``.
    """

    def __init__(self, dim: int = 64, std: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("weight", torch.randn(dim // 2, generator=g) * float(std))

    def forward(self, t: Tensor) -> Tensor:
        a = 2 * math.pi * t.float()[:, None] * self.weight
        return torch.cat([torch.sin(a), torch.cos(a)], -1)


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """[B, C] -> [B, C, 1, ...] to broadcast over x's trailing (spatial) dims."""
    return v.reshape(*v.shape, *([1] * (x.dim() - v.dim())))


class FiLM(nn.Module):
    """Feature-wise affine conditioning: ``x * (1 + scale) + shift``, (scale, shift) = Linear(emb).

    The linear map is zero-initialised, so the layer starts as the identity and learns how much
    the embedding should modulate. ``x`` is ``[B, C, *]`` (channels second), ``emb`` ``[B, emb_dim]``.
    """

    def __init__(self, emb_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.proj(emb).chunk(2, dim=-1)
        return x * (1 + _bcast(scale, x)) + _bcast(shift, x)


def _groups(channels: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


class AdaGroupNorm(nn.Module):
    """GroupNorm without its own affine; the per-sample affine comes from an embedding via ``FiLM``.

    At initialisation it equals a plain GroupNorm (weight 1, bias 0). ``groups`` is lowered to the
    largest divisor of ``channels`` not above it.
    """

    def __init__(self, emb_dim: int, channels: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels, eps=eps, affine=False)
        self.film = FiLM(emb_dim, channels)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.film(self.norm(x), emb)


def _conv(dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


class _ResBlock(nn.Module):
    """GN-SiLU-conv, AdaGN(emb)-SiLU-dropout-conv, plus a (1x1-projected) skip."""

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.norm2 = AdaGroupNorm(emb_dim, cout, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.drop(F.silu(self.norm2(h, emb))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over all spatial positions, residual."""

    def __init__(self, dims: int, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels are not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = _conv(dims)(channels, 3 * channels, 1)
        self.out = _conv(dims)(channels, channels, 1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, *spatial = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, -1).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(b, c, *spatial))


class UNet(nn.Module):
    """Time-conditioned UNet for 2-D images (``dims=2``) or 3-D volumes (``dims=3``).

    ``forward(x, t, cond=None)`` maps ``[B, in_channels, *spatial]`` and times ``[B]`` (or a
    scalar) to ``[B, out_channels, *spatial]``. One resolution level per entry of ``channel_mult``
    (level i has ``channels * channel_mult[i]`` channels and ``num_res_blocks`` residual blocks);
    between levels the resolution halves (strided conv) and doubles back (nearest + conv), so
    every spatial size must be divisible by ``2 ** depth`` with ``depth = len(channel_mult) - 1``.
    Residual blocks take the time embedding through ``AdaGroupNorm`` (FiLM, zero-initialised:
    time starts with no effect and is learned); ``attention_levels`` lists the levels (0 = full
    resolution) with self-attention after each residual block, ``mid_attention`` adds one at the
    bottleneck. Encoder outputs reach the decoder of the same level by concatenation. ``cond``, an
    optional ``[B, emb_dim]`` embedding (e.g. a class embedding), is added to the time embedding.
    Time features are ``"sinusoidal"`` (``time_scale * t``, e.g. 1000 for t in [0, 1]) or
    ``"fourier"`` (``FourierFeatures`` of ``t``).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dims: int = 2,
                 channels: int = 32, channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: Sequence[int] = (), mid_attention: bool = False, heads: int = 4,
                 emb_dim: int | None = None, time_embedding: str = "sinusoidal", time_scale: float = 1000.0,
                 groups: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"UNet: dims must be 2 or 3, got {dims}")
        if not channel_mult or num_res_blocks < 1:
            raise ValueError("UNet: channel_mult needs at least one level and num_res_blocks >= 1")
        bad = [a for a in attention_levels if not 0 <= a < len(channel_mult)]
        if bad:
            raise ValueError(f"UNet: attention_levels {bad} outside levels 0..{len(channel_mult) - 1}")
        out_channels = in_channels if out_channels is None else out_channels
        self.dims, self.in_channels, self.depth = dims, in_channels, len(channel_mult) - 1
        emb_dim = emb_dim or 4 * channels
        if time_embedding == "sinusoidal":
            feats = SinusoidalEmbedding(channels, max_freq=1e4 ** 0.5, scale=time_scale)
        elif time_embedding == "fourier":
            feats = FourierFeatures(channels)
        else:
            raise ValueError(f"UNet: time_embedding must be 'sinusoidal' or 'fourier', got {time_embedding!r}")
        self.time = nn.Sequential(feats, nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        conv = _conv(dims)
        widths = [channels * m for m in channel_mult]
        self.conv_in = conv(in_channels, channels, 3, padding=1)

        def level(cin: int, cout: int, attn: bool) -> nn.ModuleList:
            mods = []
            for i in range(num_res_blocks):
                mods.append(_ResBlock(dims, cin if i == 0 else cout, cout, emb_dim, groups, dropout))
                if attn:
                    mods.append(_Attention(dims, cout, heads, groups))
            return nn.ModuleList(mods)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cin = channels
        for i, w in enumerate(widths):
            self.down.append(level(cin, w, i in attention_levels))
            if i < self.depth:
                self.downsample.append(conv(w, w, 3, stride=2, padding=1))
            cin = w
        self.mid = nn.ModuleList([_ResBlock(dims, cin, cin, emb_dim, groups, dropout)]
                                 + ([_Attention(dims, cin, heads, groups)] if mid_attention else [])
                                 + [_ResBlock(dims, cin, cin, emb_dim, groups, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(level(2 * widths[i], widths[i], i in attention_levels))
            if i > 0:
                self.upsample.append(conv(widths[i], widths[i - 1], 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(widths[0], groups), widths[0])
        self.conv_out = conv(widths[0], out_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet(dims={self.dims}): expected x of shape [B, {self.in_channels}, "
                             f"{', '.join('*' * self.dims)}], got {list(x.shape)}")
        k = 2 ** self.depth
        if any(s % k for s in x.shape[2:]):
            raise ValueError(f"UNet: spatial size {list(x.shape[2:])} must be divisible by 2**depth = {k} "
                             f"(depth = len(channel_mult) - 1 = {self.depth}); pad or crop the input")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        emb = self.time(t.expand(x.shape[0]) if t.dim() == 0 else t.reshape(x.shape[0]))
        if cond is not None:
            emb = emb + cond
        h, skips = self.conv_in(x), []
        for i, mods in enumerate(self.down):
            for m in mods:
                h = m(h, emb)
            skips.append(h)
            if i < self.depth:
                h = self.downsample[i](h)
        for m in self.mid:
            h = m(h, emb)
        for j, mods in enumerate(self.up):
            h = torch.cat([h, skips.pop()], 1)
            for m in mods:
                h = m(h, emb)
            if j < self.depth:
                h = self.upsample[j](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

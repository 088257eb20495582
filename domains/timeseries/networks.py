"""TSDiff's denoiser: a residual stack of bidirectional S4 layers (Kollovieh et al. 2023, App. B;
the SSSD / DiffWave layout), with a diagonal state-space kernel (S4D, Gu et al. 2022) that is
computed in closed form and applied by FFT convolution, so it runs fast on a CPU.

Shapes: ``x`` is ``[B, L, C]`` (C = 1 + number of lags; the lag channels are denoised too),
``t`` is ``[B]`` (the DDPM step index 0..T-1), the output has the shape of ``x``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.nn import SinusoidalEmbedding

__all__ = ["S4DKernel", "S4DLayer", "S4Block", "TSDiffNetwork"]


class S4DKernel(nn.Module):
    """Convolution kernels of ``channels`` diagonal SSMs per feature (S4D-Lin initialisation).

    For each feature h and mode n: A_n = -exp(log_a) + i a_im, step dt_h, and the zero-order-hold
    kernel K[l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l) (B is folded into C).

    Args:
        d_model: features H.
        d_state: state size N of the real SSM; N / 2 complex-conjugate modes are kept.
        channels: kernels per feature (2 for a bidirectional layer).
        dt_min, dt_max: range of the log-uniform initial step.
    """

    def __init__(self, d_model: int, d_state: int = 128, channels: int = 1, dt_min: float = 1e-3,
                 dt_max: float = 1e-1) -> None:
        super().__init__()
        n = d_state // 2
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_re = nn.Parameter(torch.log(0.5 * torch.ones(d_model, n)))
        self.a_im = nn.Parameter(math.pi * torch.arange(n).float().expand(d_model, n).clone())
        c = torch.randn(channels, d_model, n, 2) * math.sqrt(0.5)
        self.c = nn.Parameter(c)

    def forward(self, length: int) -> Tensor:
        """Kernels ``[channels, H, length]``.

        In eval mode the kernel is cached (detached) until a parameter changes, so sampling,
        guidance and refinement compute it once.
        """
        if not self.training:
            key = (length, self.log_dt.device, tuple(p._version for p in self.parameters()))
            if getattr(self, "_cache_key", None) != key:
                with torch.no_grad():
                    self._cache = self._kernel(length)
                self._cache_key = key
            return self._cache
        return self._kernel(length)

    def _kernel(self, length: int) -> Tensor:
        # real arithmetic (exp, cos, sin of real tensors) is much faster than complex exp on CPU
        dt = self.log_dt.exp()[:, None]                                         # [H, 1]
        a = torch.complex(-self.log_a_re.exp(), self.a_im)                      # [H, N]
        dta = a * dt
        c = torch.view_as_complex(self.c) * (torch.exp(dta) - 1.0) / a          # [ch, H, N]
        pos = torch.arange(length, device=a.device, dtype=dt.dtype)
        mag = torch.exp(dta.real[..., None] * pos)                              # [H, N, L]
        ang = dta.imag[..., None] * pos
        k = torch.einsum("chn,hnl->chl", c.real, mag * torch.cos(ang))
        k = k - torch.einsum("chn,hnl->chl", c.imag, mag * torch.sin(ang))
        return 2.0 * k


class S4DLayer(nn.Module):
    """Pre-norm bidirectional S4 layer with residual: ``x + W gelu(K * norm(x) + D norm(x))``.

    The two directions are one causal and one anti-causal kernel, combined into a single
    two-sided kernel and applied by one FFT convolution of length 2L.
    """

    def __init__(self, d_model: int, d_state: int = 128, bidirectional: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.kernel = S4DKernel(d_model, d_state, channels=2 if bidirectional else 1)
        self.D = nn.Parameter(torch.randn(d_model))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, L] -> [B, H, L]``."""
        L = x.shape[-1]
        z = self.norm(x.transpose(-1, -2)).transpose(-1, -2)
        k = self.kernel(L)
        if self.bidirectional:
            k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))              # [H, 2L]
        else:
            k = k[0]
        y = torch.fft.irfft(torch.fft.rfft(z, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        y = F.gelu(y + z * self.D[:, None])
        return x + self.dropout(self.out(y))


class S4Block(nn.Module):
    """TSDiff's residual block: add the step embedding, S4 layer, gate tanh(h) * sigmoid(h),
    then two 1x1 convolutions give the residual output and the skip output. The last block's
    residual output feeds nothing, so that block has no residual convolution."""

    def __init__(self, d_model: int, d_state: int = 128, dropout: float = 0.0, last: bool = False) -> None:
        super().__init__()
        self.time = nn.Linear(d_model, d_model)
        self.s4 = S4DLayer(d_model, d_state, dropout=dropout)
        self.res = None if last else nn.Conv1d(d_model, d_model, 1)
        self.skip = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: Tensor, temb: Tensor) -> tuple[Tensor, Tensor]:
        h = self.s4(x + self.time(temb)[:, :, None])
        h = torch.tanh(h) * torch.sigmoid(h)
        return (x if self.res is None else x + self.res(h)), self.skip(h)


class TSDiffNetwork(nn.Module):
    """The TSDiff backbone (``diffusion_small_config``: hidden 64, 3 blocks, step embedding 128).

    Args:
        input_dim: channels of the series window (1 + number of lags).
        hidden_dim: S4 features.
        num_blocks: residual blocks.
        step_emb: sinusoidal step-embedding size.
        d_state: S4 state size.
        init_skip: add the input to the output (TSDiff's ``init_skip``; set per dataset).
        dropout: dropout after each S4 layer.
    """

    def __init__(self, input_dim: int = 1, hidden_dim: int = 64, num_blocks: int = 3, step_emb: int = 128,
                 d_state: int = 128, init_skip: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dim, self.init_skip = int(input_dim), bool(init_skip)
        self.inp = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        # frequencies 1e-4 .. 1 of the step index, as TSDiff's SinusoidalPositionEmbeddings
        self.temb = nn.Sequential(SinusoidalEmbedding(step_emb, max_freq=1e4, scale=1e-4),
                                  nn.Linear(step_emb, hidden_dim), nn.SiLU(),
                                  nn.Linear(hidden_dim, hidden_dim), nn.SiLU())
        self.blocks = nn.ModuleList(S4Block(hidden_dim, d_state, dropout, last=i == num_blocks - 1)
                                    for i in range(num_blocks))
        self.out = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, input_dim))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"TSDiffNetwork expects x of shape [B, L, {self.input_dim}], got {tuple(x.shape)}")
        h = self.inp(x).transpose(1, 2)                      # [B, H, L]
        temb = self.temb(t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t)
        skip = 0.0
        for block in self.blocks:
            h, s = block(h, temb)
            skip = skip + s
        out = self.out(skip.transpose(1, 2))
        return out + x if self.init_skip else out

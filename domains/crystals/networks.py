"""CSPNet, the crystal network of DiffCSP (Jiao et al., NeurIPS 2023) and CrysBFN (Wu et al., ICLR 2025),
written densely: padded ``[B, N]`` atoms, every pair of atoms within a crystal is an edge (the
references' ``edge_style: fc``), no PyG / torch_scatter.

Symmetries by construction:

* periodic translation: edges see only the wrapped difference ``f_j - f_i`` of fractional
  coordinates, through sin/cos of integer multiples of ``2 pi / coord_period``;
* O(3): the lattice enters the edges only through its Gram matrix ``L L^T`` (rows of ``L`` are the
  lattice vectors, so a rotation / reflection ``R`` acts as ``L -> L R^T`` and leaves ``L L^T``
  unchanged); the lattice head returns ``M @ L`` with ``M`` an invariant 3x3 read from the pooled
  atoms, hence ``M L R^T``;
* atom permutations: message passing with a masked mean over neighbours, masked mean pooling.

Call (both core APIs)::

    net(x, t, cond=None, mask=None, log_conc=None) -> dict

* ``x``: the state dict. ``x["frac"]`` ``[B, N, 3]`` fractional coordinates in the periodic
  convention of ``coord_period`` (angles in ``[-pi, pi)`` for the BFN, fractions in ``[0, 1)`` for
  the diffusion baseline); ``x["lattice"]`` ``[B, 9]`` the flattened lattice matrix standardised as
  ``(L - lattice_mean) / lattice_std``; ``x["types"]`` ``[B, N, K]`` (task "gen" only) the type
  probabilities (BFN) or the noisy one-hot (diffusion).
* ``t``: ``[B]`` time (the BFN's (i - 1) / n, or ``process.net_time(t)``; see ``time_scale``).
* ``cond``: task "csp": ``{"types": int64 [B, N]}`` holding ``Z - 1``; other keys are ignored.
* ``mask``: ``[B, N]`` (1 = atom exists) or a dict of per-key masks (``"frac"`` or ``"types"`` is
  used); None = every atom exists.
* ``log_conc``: ``{"frac": [B, N, 3]}`` (or the Tensor) ``log(c + eps)`` of the BFN's input
  concentrations; required iff ``use_log_conc``.

Output, keys exactly those of ``x``:

* ``output="bfn"``: ``"frac"`` the coordinate estimate ``wrap(x_frac + out)`` (CrysBFN), ``"lattice"``
  the standardised lattice estimate ``(M L - lattice_mean) / lattice_std``, ``"types"`` logits.
* ``output="diffusion"``: ``"frac"`` the raw per-atom head (DiffCSP's wrapped-normal score output,
  translation invariant), ``"lattice"`` the eps-style ``(M L) / lattice_std`` (DiffCSP's ``M L_t``
  in standardised units; O(3)-equivariant, translation invariant), ``"types"`` the raw per-atom
  head (if in ``x``).

Padded atoms never influence real ones and get zero outputs.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.nn import SinusoidalEmbedding

__all__ = ["CSPNet", "CSPLayer", "wrap_periodic", "atom_mask"]


def _frac_entry(log_conc: Any) -> Tensor:
    """The coordinates' log-concentrations from the network call's ``log_conc`` (dict or Tensor)."""
    return log_conc["frac"] if isinstance(log_conc, Mapping) else log_conc


def wrap_periodic(x: Tensor, period: float, low: float) -> Tensor:
    """``x`` wrapped into ``[low, low + period)``."""
    return torch.remainder(x - low, period) + low


def atom_mask(mask: Any, x: Mapping[str, Tensor]) -> Tensor:
    """The ``[B, N]`` atom mask (float, dtype of ``x["frac"]``) from a Tensor, a dict or None."""
    frac = x["frac"]
    B, N = frac.shape[:2]
    if mask is None:
        return frac.new_ones(B, N)
    if isinstance(mask, Mapping):
        for key in ("frac", "types"):
            if mask.get(key) is not None:
                mask = mask[key]
                break
        else:
            raise ValueError(f"mask dict needs a 'frac' or 'types' entry, has {sorted(mask)}")
    m = torch.as_tensor(mask).to(device=frac.device, dtype=frac.dtype)
    if m.ndim > 2 and m.shape[:2] == (B, N):
        m = m.reshape(B, N, -1)[..., 0]
    if m.shape != (B, N):
        raise ValueError(f"atom mask of shape {tuple(m.shape)} does not fit frac of shape {tuple(frac.shape)}")
    return m


class PeriodicSinusoids(nn.Module):
    """sin / cos(2 pi k d / period), k = 0..num_freqs-1, of each of the 3 components of d:
    ``[..., 3] -> [..., 6 * num_freqs]`` (all sines, then all cosines)."""

    def __init__(self, num_freqs: int, period: float) -> None:
        super().__init__()
        self.register_buffer("freqs", (2 * math.pi / period) * torch.arange(num_freqs, dtype=torch.float64),
                             persistent=False)
        self.dim = 6 * num_freqs

    def forward(self, d: Tensor) -> Tensor:
        a = (d[..., None] * self.freqs.to(d.dtype)).flatten(-2)
        return torch.cat([a.sin(), a.cos()], -1)


class CSPLayer(nn.Module):
    """One message-passing layer (pre-LayerNorm, residual).

    ``e_ij = MLP([h_i, h_j, gram, sin(d_ij)])`` (Linear, SiLU, Linear, SiLU); ``a_i`` = masked mean of
    ``e_ij`` over the crystal's atoms j (i included, as in the references' fc graph);
    ``h_i += MLP([h_i, a_i])``. The first edge Linear is evaluated as the sum of its blocks applied to
    node / crystal / edge inputs, which is the same affine map without building the
    ``[B, N, N, 2H + 9 + 6F]`` concatenation; its sinusoid block is applied by :class:`CSPNet` for all
    layers in one matmul.
    """

    def __init__(self, hidden: int, edge_feat_dim: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.hidden = hidden
        self.edge_in = nn.Linear(2 * hidden + 9 + edge_feat_dim, hidden)
        self.edge_out = nn.Linear(hidden, hidden)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.norm = nn.LayerNorm(hidden) if layer_norm else nn.Identity()

    def edge_weight(self) -> Tensor:
        """The block of the first edge Linear acting on the edge sinusoids, ``[H, 6F]``."""
        return self.edge_in.weight[:, 2 * self.hidden + 9:]

    def forward(self, h: Tensor, gram: Tensor, edge_proj: Tensor, mask: Tensor) -> Tensor:
        """h [B, N, H], gram [B, 9], edge_proj [B, N, N, H] (the sinusoids times :meth:`edge_weight`,
        computed for all layers at once by the caller), mask [B, N] -> [B, N, H]."""
        H = self.hidden
        hn = self.norm(h)
        W, b = self.edge_in.weight, self.edge_in.bias
        w_i, w_j, w_g = W[:, :H], W[:, H:2 * H], W[:, 2 * H:2 * H + 9]
        node_i = F.linear(hn, w_i, b) + F.linear(gram, w_g)[:, None, :]       # [B, N, H]
        node_j = F.linear(hn, w_j)                                             # [B, N, H]
        pre = edge_proj + node_i[:, :, None, :] + node_j[:, None, :, :]
        e = F.silu(self.edge_out(F.silu(pre)))                                 # [B, N, N, H]
        count = mask.sum(1).clamp_min(1.0)                                     # [B]
        agg = torch.matmul(mask[:, None, None, :], e).squeeze(2) / count[:, None, None]   # masked mean over j
        return h + self.node_mlp(torch.cat([hn, agg], -1))


class CSPNet(nn.Module):
    """Dense CSPNet for crystal structure prediction (``task="csp"``: types given in ``cond``) and ab
    initio generation (``task="gen"``: types in the state). See the module docstring for the call.

    Args:
        num_types: K, the number of atom types (Z = 1..K).
        hidden, layers: width and number of message-passing layers (references: 512, 6).
        num_freqs: frequencies k = 0..num_freqs-1 of the edge sinusoids (reference 128).
        time_dim: size of the sinusoidal time embedding (CrysBFN 128, DiffCSP 256).
        coord_period: period of ``x["frac"]``: ``2 pi`` (BFN angles) or 1 (fractions).
        coord_low: lower end of the coordinate range the BFN estimate is wrapped into; default
            ``-period / 2`` for ``2 pi`` (the BFN's ``[-pi, pi)``), else 0.
        lattice_mean, lattice_std: the standardisation of ``x["lattice"]`` (scalar or 9 values);
            the network rebuilds ``L = x * std + mean`` in Angstrom. The Gram feature is
            ``L L^T / mean(std)^2`` (CrysBFN's scale for a scalar std). Exact O(3) equivariance of the
            standardised outputs needs a zero mean and a scalar std (the references' choice).
        task: ``"csp"`` or ``"gen"``.
        output: ``"bfn"`` or ``"diffusion"`` (see the module docstring).
        use_log_conc: concatenate the BFN's (normalised) log concentrations to the node input.
        log_conc_range: ``(lo, hi)``: log_conc is mapped to ``(log_conc - lo) / (hi - lo)`` (CrysBFN's
            ``norm_beta``; default ``log(1e-7)`` .. ``log(1e3)`` = the flow's eps and beta1); None = raw.
        time_scale, time_max_freq: the embedding is ``sin / cos(time_scale * t * f)``, ``f`` geometric in
            ``[1, time_max_freq]``; for a time on an integer grid 0..T-1 (DDPM's ``net_time``) use
            ``time_scale = 1 / T``.
        layer_norm: pre-LayerNorm in each layer and before the heads (CrysBFN's ``ln: true``).
        coord_scale: ``"none"``: the BFN coordinate estimate is ``wrap(m + out)`` (the reference);
            ``"posterior"``: ``wrap(m + out / sqrt(1 + c))`` with ``c`` the input concentration (raw
            ``exp(log_conc)``), so the head predicts the offset in units of the input's posterior
            spread, as an eps-prediction does. The loss is unchanged; it only rescales the head, whose
            gradient is otherwise ~sqrt(c) times larger at late steps than at early ones.
        lattice_param, sigma1_lattice: ``"x0"``: the BFN lattice estimate is ``(M L - mean) / std``
            (the reference's ``pred_mean``); ``"eps"``: the head ``M L / std`` is a noise estimate and
            the estimate is ``mu / gamma - sqrt((1 - gamma) / gamma) eps_hat`` with
            ``gamma = 1 - sigma1_lattice^(2 t)`` (the BFN paper's continuous-data output, the
            reference's ``pred_mean: false``; 0 at t = 0). ``sigma1_lattice`` must be the flow's.
    """

    def __init__(self, num_types: int = 100, hidden: int = 512, layers: int = 6, num_freqs: int = 128,
                 time_dim: int = 128, coord_period: float = 2 * math.pi, lattice_mean: float | Sequence[float] = 0.0,
                 lattice_std: float | Sequence[float] = 1.0, task: Literal["csp", "gen"] = "csp",
                 output: Literal["bfn", "diffusion"] = "bfn", use_log_conc: bool = True,
                 log_conc_range: tuple[float, float] | None = (math.log(1e-7), math.log(1e3)),
                 coord_low: float | None = None, time_scale: float = 1.0, time_max_freq: float = 1000.0,
                 layer_norm: bool = True, coord_scale: Literal["none", "posterior"] = "none",
                 lattice_param: Literal["x0", "eps"] = "x0", sigma1_lattice: float = 0.0316) -> None:
        super().__init__()
        if task not in ("csp", "gen"):
            raise ValueError(f"task must be 'csp' or 'gen', got {task!r}")
        if output not in ("bfn", "diffusion"):
            raise ValueError(f"output must be 'bfn' or 'diffusion', got {output!r}")
        if layers < 1 or hidden < 1 or num_freqs < 1:
            raise ValueError(f"layers, hidden and num_freqs must be >= 1, got {layers}, {hidden}, {num_freqs}")
        if coord_period <= 0:
            raise ValueError(f"coord_period must be positive, got {coord_period}")
        if coord_scale not in ("none", "posterior"):
            raise ValueError(f"coord_scale must be 'none' or 'posterior', got {coord_scale!r}")
        if coord_scale == "posterior" and not (output == "bfn" and use_log_conc):
            raise ValueError("coord_scale='posterior' scales the BFN's coordinate offset by its input concentration: "
                             "it needs output='bfn' and use_log_conc=True")
        self.coord_scale = coord_scale
        if lattice_param not in ("x0", "eps"):
            raise ValueError(f"lattice_param must be 'x0' or 'eps', got {lattice_param!r}")
        if lattice_param == "eps" and output != "bfn":
            raise ValueError("lattice_param='eps' is the BFN's lattice estimate from a noise prediction: it needs "
                             "output='bfn' (the diffusion output is already eps-style)")
        if not 0.0 < sigma1_lattice < 1.0:
            raise ValueError(f"sigma1_lattice must be in (0, 1), got {sigma1_lattice}")
        self.lattice_param, self.sigma1_lattice = lattice_param, float(sigma1_lattice)
        self.num_types, self.hidden, self.layers_n = int(num_types), int(hidden), int(layers)
        self.task, self.output, self.use_log_conc = task, output, bool(use_log_conc)
        self.coord_period = float(coord_period)
        if coord_low is None:
            coord_low = -self.coord_period / 2 if math.isclose(self.coord_period, 2 * math.pi) else 0.0
        self.coord_low = float(coord_low)
        self.log_conc_range = None if log_conc_range is None else (float(log_conc_range[0]), float(log_conc_range[1]))

        mean = torch.as_tensor(lattice_mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(lattice_std, dtype=torch.float32).flatten()
        for name, v in (("lattice_mean", mean), ("lattice_std", std)):
            if v.numel() not in (1, 9):
                raise ValueError(f"{name} must be a scalar or 9 values, got {v.numel()}")
        if (std <= 0).any():
            raise ValueError("lattice_std must be positive")
        self.register_buffer("lattice_mean", mean.expand(9).clone())
        self.register_buffer("lattice_std", std.expand(9).clone())

        if task == "csp":
            self.type_embed: nn.Module = nn.Embedding(num_types, hidden)
        else:
            self.type_embed = nn.Linear(num_types, hidden)
        self.time_embed = SinusoidalEmbedding(time_dim, max_freq=time_max_freq, scale=time_scale)
        self.node_in = nn.Linear(hidden + time_dim + (3 if use_log_conc else 0), hidden)
        self.edge_sin = PeriodicSinusoids(num_freqs, self.coord_period)
        self.layers = nn.ModuleList(CSPLayer(hidden, self.edge_sin.dim, layer_norm) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden) if layer_norm else nn.Identity()
        self.coord_out = nn.Linear(hidden, 3, bias=False)
        self.lattice_out = nn.Linear(hidden, 9, bias=False)
        self.type_out = nn.Linear(hidden, num_types) if task == "gen" else None

    # -- helpers ---------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"task={self.task}, output={self.output}, hidden={self.hidden}, layers={self.layers_n}, "
                f"num_types={self.num_types}, coord_period={self.coord_period:.6g}, "
                f"use_log_conc={self.use_log_conc}, params={self.num_parameters():,}")

    def lattice_matrix(self, lattice: Tensor) -> Tensor:
        """Standardised ``[B, 9]`` -> the lattice matrix ``[B, 3, 3]`` (rows = vectors, Angstrom)."""
        return (lattice * self.lattice_std.to(lattice.dtype) + self.lattice_mean.to(lattice.dtype)).view(-1, 3, 3)

    def _node_input(self, x: Mapping[str, Tensor], t: Tensor, cond: Any, log_conc: Any, dtype: torch.dtype) -> Tensor:
        """Node features from types, the time ``t`` ``[B]`` and (BFN) the log-concentrations."""
        frac = x["frac"]
        B, N = frac.shape[:2]
        if self.task == "csp":
            if not isinstance(cond, Mapping) or cond.get("types") is None:
                raise ValueError("task 'csp' needs the atom types as cond={'types': int64 [B, N]} (Z - 1)")
            types = torch.as_tensor(cond["types"], device=frac.device).long()
            if types.shape != (B, N):
                raise ValueError(f"cond['types'] must be [B, N] = {(B, N)}, got {tuple(types.shape)}")
            h_type = self.type_embed(types.clamp(0, self.num_types - 1)).to(dtype)
        else:
            if x.get("types") is None:
                raise ValueError("task 'gen' needs the type probabilities in the state as x['types'] [B, N, K]")
            probs = x["types"]
            if probs.shape != (B, N, self.num_types):
                raise ValueError(f"x['types'] must be [B, N, K] = {(B, N, self.num_types)}, got {tuple(probs.shape)}")
            h_type = self.type_embed(probs.to(dtype))
        h_time = self.time_embed(t).to(dtype)[:, None, :].expand(B, N, -1)
        parts = [h_type, h_time]
        if self.use_log_conc:
            if log_conc is None:
                raise ValueError("use_log_conc=True but no log_conc was passed (entropy conditioning off in the "
                                 "flow, or a diffusion model? then build the network with use_log_conc=False)")
            lc = _frac_entry(log_conc).to(dtype)
            if lc.shape != frac.shape:
                raise ValueError(f"log_conc['frac'] must be shaped like frac {tuple(frac.shape)}, got {tuple(lc.shape)}")
            if self.log_conc_range is not None:
                lo, hi = self.log_conc_range
                lc = (lc - lo) / (hi - lo)
            parts.append(lc)
        elif log_conc is not None:
            raise ValueError("log_conc was passed but the network was built with use_log_conc=False")
        return self.node_in(torch.cat(parts, -1))

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: Mapping[str, Tensor], t: Tensor, cond: Any = None, mask: Any = None,
                log_conc: Any = None) -> dict[str, Tensor]:
        if not isinstance(x, Mapping) or "frac" not in x or "lattice" not in x:
            raise ValueError("CSPNet expects a state dict with 'frac' [B, N, 3] and 'lattice' [B, 9]")
        frac, lattice = x["frac"], x["lattice"]
        dtype = frac.dtype
        B, N = frac.shape[:2]
        if frac.shape != (B, N, 3) or lattice.shape != (B, 9):
            raise ValueError(f"frac must be [B, N, 3] and lattice [B, 9]; got {tuple(frac.shape)} and "
                             f"{tuple(lattice.shape)}")
        m = atom_mask(mask, x)                                                   # [B, N]
        L = self.lattice_matrix(lattice.to(dtype))                               # [B, 3, 3]
        scale = self.lattice_std.to(dtype).mean()
        gram = (L @ L.transpose(1, 2)).reshape(B, 9) / scale ** 2               # O(3)-invariant
        P = self.coord_period
        d = frac[:, None, :, :] - frac[:, :, None, :]                            # d_ij = f_j - f_i
        d = d - P * torch.round(d / P)                                           # wrapped to [-P/2, P/2]
        edge_feat = self.edge_sin(d)                                             # [B, N, N, 6F]
        # the sinusoid block of every layer's first edge Linear in one matmul (same map, faster GEMM)
        w_edges = torch.cat([layer.edge_weight() for layer in self.layers], 0)
        edge_proj = F.linear(edge_feat, w_edges).split(self.hidden, -1)

        t = torch.as_tensor(t, device=frac.device)
        t = (t.expand(B) if t.ndim == 0 else t).reshape(B)                       # [B]
        h = self._node_input(x, t, cond, log_conc, dtype) * m[..., None]
        for layer, proj in zip(self.layers, edge_proj):
            h = layer(h, gram, proj, m) * m[..., None]
        h = self.final_norm(h)

        coord = self.coord_out(h)                                                # [B, N, 3], invariant
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
        M = self.lattice_out(pooled).view(B, 3, 3)
        ML = (M @ L).reshape(B, 9)                                               # equivariant: M L R^T
        std, mean = self.lattice_std.to(dtype), self.lattice_mean.to(dtype)
        out: dict[str, Tensor] = {}
        if self.output == "bfn":
            if self.coord_scale == "posterior":                                  # offset in posterior-std units
                coord = coord * torch.rsqrt(1.0 + torch.exp(_frac_entry(log_conc).to(dtype)))
            out["frac"] = wrap_periodic(frac + coord, P, self.coord_low) * m[..., None]
            if self.lattice_param == "eps":                                      # the BFN paper's x(mu, eps_hat, t)
                gamma = (1.0 - self.sigma1_lattice ** (2.0 * t.to(dtype)))[:, None]
                safe = gamma.clamp_min(1e-6)
                est = lattice / safe - torch.sqrt((1.0 - safe) / safe) * (ML / std)
                out["lattice"] = torch.where(gamma > 1e-6, est, torch.zeros_like(est))
            else:
                out["lattice"] = (ML - mean) / std
        else:
            out["frac"] = coord * m[..., None]
            out["lattice"] = ML / std
        if "types" in x:
            if self.type_out is None:
                raise ValueError("x has 'types' but the network was built for task 'csp' (types in cond)")
            out["types"] = self.type_out(h) * m[..., None]
        return out

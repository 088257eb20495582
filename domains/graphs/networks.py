"""GDSS's score networks (Jo et al. 2022, Sec. 3.3 and App. C): ScoreNetworkX (a dense GCN stack
and an MLP) and ScoreNetworkA (graph multi-head attention over the adjacency powers A, A^2, ...).

As in the paper, the networks are not conditioned on t; the VP / VE scaling of the output is done
by the core's :class:`workbench.precond.Denoiser` (``eps`` for a VP variable, ``score`` for VE).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MLP, DenseGCNConv

from workbench.nn import SinusoidalEmbedding

__all__ = ["ScoreNetworkX", "ScoreNetworkA", "GDSSNetwork", "mask_nodes", "mask_pairs"]


def mask_nodes(x: Tensor, flags: Tensor | None) -> Tensor:
    """Zero the features of padded nodes: x [B, N, F], flags [B, N]."""
    return x if flags is None else x * flags[..., None]


def mask_pairs(a: Tensor, flags: Tensor | None) -> Tensor:
    """Zero rows and columns of padded nodes: a [B, N, N] or [B, C, N, N]."""
    if flags is None:
        return a
    f = flags[:, None] if a.ndim == 4 else flags
    return a * f[..., :, None] * f[..., None, :]


def _mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int) -> MLP:
    """GDSS's MLP: ``num_layers`` linear layers with ELU between them (one layer = linear), no
    normalisation, no dropout; PyG's MLP applies it to the last axis of any shape."""
    return MLP(in_channels=in_dim, hidden_channels=hidden, out_channels=out_dim, num_layers=num_layers,
               act="elu", norm=None, plain_last=True)


class ScoreNetworkX(nn.Module):
    """Node-feature network: ``depth`` GCN layers (tanh), all layer outputs concatenated with the
    input, then a 3-layer ELU MLP to the feature size; padded nodes masked."""

    def __init__(self, max_feat_num: int, depth: int = 2, nhid: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList(DenseGCNConv(max_feat_num if i == 0 else nhid, nhid) for i in range(depth))
        fdim = max_feat_num + depth * nhid
        self.final = _mlp(3, fdim, 2 * fdim, max_feat_num)

    def forward(self, x: Tensor, adj: Tensor, flags: Tensor | None) -> Tensor:
        hs = [x]
        for conv in self.convs:
            x = torch.tanh(conv(x, adj))
            hs.append(x)
        return mask_nodes(self.final(torch.cat(hs, -1)), flags)


class _Attention(nn.Module):
    """One graph multi-head attention (Baek et al. 2021): Q, K, V from GCNs; the attention map
    tanh(Q K^T / sqrt(out_dim)) is averaged over heads and symmetrised."""

    def __init__(self, in_dim: int, attn_dim: int, out_dim: int, num_heads: int = 4, values: bool = True) -> None:
        super().__init__()
        if attn_dim % num_heads:
            raise ValueError(f"attention dim {attn_dim} is not divisible by {num_heads} heads")
        self.q, self.k = DenseGCNConv(in_dim, attn_dim), DenseGCNConv(in_dim, attn_dim)
        self.v = DenseGCNConv(in_dim, out_dim) if values else None
        self.heads, self.out_dim = num_heads, out_dim

    def forward(self, x: Tensor, adj: Tensor) -> tuple[Tensor | None, Tensor]:
        B, N, _ = x.shape
        q = self.q(x, adj).view(B, N, self.heads, -1).transpose(1, 2)    # [B, H, N, d]
        k = self.k(x, adj).view(B, N, self.heads, -1).transpose(1, 2)
        att = torch.tanh(q @ k.transpose(-1, -2) / math.sqrt(self.out_dim)).mean(1)
        return (self.v(x, adj) if self.v is not None else None), 0.5 * (att + att.transpose(-1, -2))


class _AttentionLayer(nn.Module):
    """A GMH layer over C_in adjacency channels -> new node features and C_out channels.

    ``node_out=False`` (the last layer) skips the node-feature branch, whose output nothing reads
    (the reference builds it anyway; its parameters never receive a gradient there)."""

    def __init__(self, num_linears: int, in_dim: int, attn_dim: int, out_dim: int, c_in: int, c_out: int,
                 num_heads: int = 4, node_out: bool = True) -> None:
        super().__init__()
        self.attn = nn.ModuleList(_Attention(in_dim, attn_dim, out_dim, num_heads, values=node_out)
                                  for _ in range(c_in))
        hidden = 2 * max(c_in, c_out)
        self.edge_mlp = _mlp(num_linears, 2 * c_in, hidden, c_out)
        self.node_mlp = _mlp(2, c_in * out_dim, hidden, out_dim) if node_out else None

    def forward(self, x: Tensor, adjc: Tensor, flags: Tensor | None) -> tuple[Tensor | None, Tensor]:
        feats, maps = zip(*(att(x, adjc[:, c]) for c, att in enumerate(self.attn)))
        x_out = None
        if self.node_mlp is not None:
            x_out = torch.tanh(mask_nodes(self.node_mlp(torch.cat(feats, -1)), flags))
        e = torch.cat([torch.stack(maps, -1), adjc.permute(0, 2, 3, 1)], -1)   # [B, N, N, 2 C_in]
        a = self.edge_mlp(e).permute(0, 3, 1, 2)
        return x_out, mask_pairs(a + a.transpose(-1, -2), flags)


def _powers(adj: Tensor, c: int) -> Tensor:
    """[A, A^2, ..., A^c] stacked as channels: [B, c, N, N]."""
    out, p = [adj], adj
    for _ in range(c - 1):
        p = p @ adj
        out.append(p)
    return torch.stack(out, 1)


class ScoreNetworkA(nn.Module):
    """Adjacency network: GMH layers over the adjacency powers, channels c_init -> c_hid ... ->
    c_final; all channels concatenated and read out per edge by a 3-layer ELU MLP; the output is
    symmetric with a zero diagonal and masked by the node flags."""

    def __init__(self, max_feat_num: int, nhid: int = 16, num_layers: int = 3, num_linears: int = 3,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, adim: int = 16, num_heads: int = 4) -> None:
        super().__init__()
        self.c_init = c_init
        layers = []
        for i in range(num_layers):
            c_in = c_init if i == 0 else c_hid
            c_out = c_final if i == num_layers - 1 else c_hid
            layers.append(_AttentionLayer(num_linears, max_feat_num if i == 0 else nhid,
                                          nhid if i == 0 else adim, nhid, c_in, c_out, num_heads,
                                          node_out=i < num_layers - 1))
        self.layers = nn.ModuleList(layers)
        fdim = c_hid * (num_layers - 1) + c_final + c_init
        self.final = _mlp(3, fdim, 2 * fdim, 1)

    def forward(self, x: Tensor, adj: Tensor, flags: Tensor | None) -> Tensor:
        adjc = _powers(adj, self.c_init)
        chans = [adjc]
        for layer in self.layers:
            x, adjc = layer(x, adjc, flags)
            chans.append(adjc)
        out = self.final(torch.cat(chans, 1).permute(0, 2, 3, 1)).squeeze(-1)
        off = 1.0 - torch.eye(out.shape[-1], device=out.device, dtype=out.dtype)
        return mask_pairs(out * off, flags)


class GDSSNetwork(nn.Module):
    """The pair of GDSS networks on a graph State ``{"x": [B, N, F], "adj": [B, N, N]}``.

    ``forward(state, t, mask=flags)`` returns ``{"x": ScoreNetworkX(...), "adj": ScoreNetworkA(...)}``;
    t is ignored (GDSS has no time conditioning) unless ``time_embedding=True``, an option beyond the
    paper that adds a learned sinusoidal embedding of t to the node features of both networks.
    :meth:`clip_groups` lets the trainer clip the two networks' gradients separately, as GDSS's two
    optimisers do.
    """

    def __init__(self, max_feat_num: int, x_depth: int = 2, x_nhid: int = 16, a_nhid: int = 16,
                 a_layers: int = 3, a_linears: int = 3, c_init: int = 2, c_hid: int = 8, c_final: int = 4,
                 adim: int = 16, num_heads: int = 4, time_embedding: bool = False) -> None:
        super().__init__()
        self.temb = None
        if time_embedding:
            self.temb = nn.Sequential(SinusoidalEmbedding(32), nn.Linear(32, max_feat_num))
        self.net_x = ScoreNetworkX(max_feat_num, x_depth, x_nhid)
        self.net_adj = ScoreNetworkA(max_feat_num, a_nhid, a_layers, a_linears, c_init, c_hid, c_final, adim, num_heads)

    def forward(self, state: dict[str, Tensor], t: Tensor, mask: Tensor | None = None,
                cond: Tensor | None = None) -> dict[str, Tensor]:
        x, adj = state["x"], state["adj"]
        if self.temb is not None:
            x = mask_nodes(x + self.temb(t)[:, None, :], mask)
        return {"x": self.net_x(x, adj, mask), "adj": self.net_adj(x, adj, mask)}

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.net_x.parameters()), list(self.net_adj.parameters())]

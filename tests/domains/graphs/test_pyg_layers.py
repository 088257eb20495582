"""The GDSS networks are built from PyG's DenseGCNConv and MLP: check that they compute GDSS's
layers (models/layers.py of the reference) and nothing more.

GDSS's DenseGCNConv: A' = A with its diagonal set to 1, D = clamp(rowsum(A'), min=1),
out = D^-1/2 A' D^-1/2 (X W) + b; its MLP: linear layers with the activation between them, no
normalisation, no dropout. The reference forward below is written from those formulas.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_geometric")

from workbench.domains.graphs.networks import GDSSNetwork, ScoreNetworkX  # noqa: E402


def _noisy_graph(B: int = 5, N: int = 7, Fdim: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    flags = (torch.arange(N)[None] < torch.randint(3, N + 1, (B, 1), generator=g)).float()
    x = torch.randn(B, N, Fdim, generator=g) * flags[..., None]
    adj = torch.randn(B, N, N, generator=g)          # noisy: negative weights and a diagonal
    adj = (adj + adj.transpose(-1, -2)) / 2 * flags[:, None] * flags[:, :, None]
    return x.double(), adj.double(), flags.double()


def _gdss_gcn(x, adj, weight_in_out, bias):
    a = adj.clone()
    idx = torch.arange(a.shape[-1])
    a[:, idx, idx] = 1.0
    d = a.sum(-1).clamp(min=1).pow(-0.5)
    return (d[..., :, None] * a * d[..., None, :]) @ (x @ weight_in_out) + bias


def _gdss_mlp(x, linears, act=F.elu):
    for i, (w, b) in enumerate(linears):
        x = x @ w.T + b
        if i < len(linears) - 1:
            x = act(x)
    return x


def test_score_network_x_computes_gdss_layers() -> None:
    torch.manual_seed(0)
    net = ScoreNetworkX(max_feat_num=4, depth=3, nhid=6).double()
    x, adj, flags = _noisy_graph()
    hs, h = [x], x
    for conv in net.convs:
        h = torch.tanh(_gdss_gcn(h, adj, conv.lin.weight.T, conv.bias))
        hs.append(h)
    mlp = [(lin.weight, lin.bias) for lin in net.final.lins]
    assert len(mlp) == 3
    expected = _gdss_mlp(torch.cat(hs, -1), mlp) * flags[..., None]
    torch.testing.assert_close(net(x, adj, flags), expected, rtol=1e-12, atol=1e-12)


def test_edge_mlp_acts_on_the_last_axis_of_a_4d_tensor() -> None:
    torch.manual_seed(0)
    net = GDSSNetwork(max_feat_num=4, x_depth=2, x_nhid=8, a_nhid=8, a_layers=2, a_linears=3, c_hid=4,
                      c_final=2, adim=8).double()
    mlp = net.net_adj.layers[0].edge_mlp
    e = torch.randn(2, 5, 5, mlp.in_channels, dtype=torch.float64)
    expected = _gdss_mlp(e, [(lin.weight, lin.bias) for lin in mlp.lins])
    mlp.train()      # no normalisation and no dropout, so training mode changes nothing
    torch.testing.assert_close(mlp(e), expected, rtol=1e-12, atol=1e-12)


def test_parameter_count_unchanged_by_the_move_to_pyg() -> None:
    """The community-small network had 193,699 parameters with the hand-written layers (a
    normalisation layer or an extra bias would change it)."""
    net = GDSSNetwork(max_feat_num=10, x_depth=3, x_nhid=32, a_nhid=32, a_layers=5, a_linears=2, adim=32)
    assert sum(p.numel() for p in net.parameters()) == 193_699

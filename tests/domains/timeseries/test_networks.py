"""The S4D kernel against the recurrence it stands for; the TSDiff backbone's contract."""
from __future__ import annotations

import torch

from workbench.domains.timeseries.networks import S4DKernel, S4DLayer, TSDiffNetwork


def test_s4d_kernel_matches_the_discretised_recurrence() -> None:
    """K * u equals running x_{k+1} = exp(dt A) x_k + (exp(dt A) - 1) / A u_k, y_k = 2 Re(C x_{k+1})."""
    torch.manual_seed(0)
    H, N, L = 3, 8, 20
    kern = S4DKernel(H, N, channels=1).double()
    k = kern(L)[0]                                                     # [H, L]
    u = torch.randn(H, L, dtype=torch.float64)
    conv = torch.stack([torch.stack([(k[h, : i + 1].flip(0) * u[h, : i + 1]).sum() for i in range(L)]) for h in range(H)])
    dt = kern.log_dt.exp().double()[:, None]
    a = torch.complex(-kern.log_a_re.exp().double(), kern.a_im.double())
    c = torch.view_as_complex(kern.c.double().contiguous())[0]
    da, db = torch.exp(dt * a), (torch.exp(dt * a) - 1) / a
    x = torch.zeros(H, N // 2, dtype=torch.complex128)
    ys = []
    for i in range(L):
        x = da * x + db * u[:, i : i + 1]
        ys.append(2 * (c * x).sum(-1).real)
    torch.testing.assert_close(conv, torch.stack(ys, 1))


def test_bidirectional_layer_sees_both_sides_and_unidirectional_is_causal() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 4, 16)
    for bidir in (True, False):
        layer = S4DLayer(4, 8, bidirectional=bidir)
        x2 = x.clone()
        x2[:, 0, 10] += 1.0   # one channel: a shift of all channels would vanish in the LayerNorm
        d = (layer(x2) - layer(x)).abs().sum((0, 1))
        assert d[11:].sum() > 1e-4   # the kernel carries the change forward, not only the residual
        assert (d[:10].sum() > 1e-4) == bidir   # FFT round-off leaks ~1e-7 before the change (thread-count dependent)


def test_backbone_shapes_init_skip_and_kernel_cache() -> None:
    torch.manual_seed(2)
    net = TSDiffNetwork(input_dim=3, hidden_dim=8, num_blocks=2, step_emb=16, d_state=8, init_skip=True)
    x, t = torch.randn(4, 30, 3), torch.tensor([0.0, 5.0, 50.0, 99.0])
    out = net(x, t)
    assert out.shape == x.shape
    net.eval()
    a = net(x, t)
    torch.testing.assert_close(a, net(x, t))
    with torch.no_grad():       # a parameter change invalidates the cached kernel
        net.blocks[0].s4.kernel.log_dt.add_(0.5)
    assert not torch.allclose(a, net(x, t))
    try:
        net(torch.randn(4, 30, 2), t)
    except ValueError as e:
        assert "[B, L, 3]" in str(e)
    else:
        raise AssertionError("a wrong channel count must raise")

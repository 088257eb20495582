"""Geometry contract: noise, projection, broadcasting and per-sample reduction."""
from __future__ import annotations

import pytest
import torch

from workbench.geometry import Euclidean, Masked, Periodic, Product, Symmetric, ZeroCoM


def _node_mask() -> torch.Tensor:
    m = torch.zeros(3, 5)
    m[0, :5] = 1
    m[1, :3] = 1
    m[2, :1] = 1
    return m


def test_masked_noise_and_reduce() -> None:
    m = _node_mask()
    g = Masked().bind(m)
    x = torch.zeros(3, 5, 4)
    z = g.randn_like(x)
    assert (z[1, 3:] == 0).all() and (z[1, :3] != 0).all()
    err = torch.ones(3, 5, 4)
    assert torch.allclose(g.reduce(err, "sum"), torch.tensor([20.0, 12.0, 4.0]))
    assert torch.allclose(g.reduce(err), torch.ones(3))
    assert torch.allclose(g.dims(x), torch.tensor([20.0, 12.0, 4.0]))
    with pytest.raises(ValueError, match="bind"):
        Masked().randn_like(x)
    with pytest.raises(ValueError, match="does not fit"):
        g.randn_like(torch.zeros(3, 4, 4))


def test_symmetric_noise() -> None:
    m = _node_mask()
    g = Symmetric().bind(m)
    z = g.randn_like(torch.zeros(3, 5, 5), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z, z.transpose(1, 2))
    assert (torch.diagonal(z, dim1=1, dim2=2) == 0).all()
    assert (z[1, 3:, :] == 0).all() and (z[1, :, 3:] == 0).all()
    big = Symmetric().randn_like(torch.zeros(200, 30, 30))
    off = big[:, ~torch.eye(30, dtype=torch.bool)]
    assert float(off.var()) == pytest.approx(1.0, rel=0.02)
    x = torch.randn(3, 5, 5)
    p = g.project(x)
    assert torch.allclose(p, g.project(p)) and torch.allclose(p, p.transpose(1, 2))
    assert torch.allclose(g.dims(x), torch.tensor([20.0, 6.0, 0.0]).clamp_min(1.0))
    zc = Symmetric().randn_like(torch.zeros(2, 4, 4, 3))  # channels last
    assert torch.allclose(zc, zc.transpose(1, 2))


def test_periodic_and_zero_com() -> None:
    g = Periodic(1.0)
    x = torch.tensor([[1.25, -0.25, 3.0]])
    assert torch.allclose(g.project(x), torch.tensor([[0.25, 0.75, 0.0]]))
    assert torch.allclose(g.wrap(torch.tensor([0.9, -0.6])), torch.tensor([-0.1, 0.4]), atol=1e-6)
    m = _node_mask()
    zc = ZeroCoM().bind(m)
    z = zc.randn_like(torch.zeros(3, 5, 3))
    assert torch.allclose((z * m[..., None]).sum(1), torch.zeros(3, 3), atol=1e-5)
    assert (z[1, 3:] == 0).all()


def test_expand_and_product() -> None:
    g = Product(x=Masked(), adj=Symmetric()).bind(_node_mask())
    state = {"x": torch.zeros(3, 5, 4), "adj": torch.zeros(3, 5, 5)}
    e = g.expand(torch.tensor([1.0, 2.0, 3.0]), state)
    assert e["x"].shape == (3, 1, 1) and e["adj"].shape == (3, 1, 1)
    z = g.randn_like(state)
    assert torch.allclose(z["adj"], z["adj"].transpose(1, 2)) and (z["x"][2, 1:] == 0).all()
    parts = g.reduce_parts({"x": torch.ones(3, 5, 4), "adj": torch.ones(3, 5, 5)}, "sum")
    assert torch.allclose(parts["x"], torch.tensor([20.0, 12.0, 4.0]))
    assert torch.allclose(parts["adj"], torch.tensor([20.0, 6.0, 0.0]))
    with pytest.raises(KeyError, match="no part"):
        g.randn_like({"y": torch.zeros(3, 5)})
    assert Euclidean().expand(0.5, torch.zeros(2, 3, 4)).shape == (2, 1, 1)

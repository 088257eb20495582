"""Parametrisation round trips: every output type converts exactly to (x0, eps) and back."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean
from workbench.precond import PREDICTIONS, Denoiser, from_x0_eps, to_x0_eps
from workbench.processes import EDM, VE, VP, LinearInterpolant, TrigInterpolant

PROCS = [VP(), VE(0.01, 50.0), LinearInterpolant(), TrigInterpolant(), EDM()]


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("proc", PROCS, ids=lambda p: type(p).__name__)
def test_round_trip(kind: str, proc) -> None:
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    lo, hi = (0.05, 0.95) if not isinstance(proc, EDM) else (0.01, 20.0)
    t = lo + (hi - lo) * torch.rand(64, generator=g, dtype=torch.float64)
    c = proc.at(t, x0, Euclidean())
    x = c.alpha * x0 + c.sigma * eps
    out = from_x0_eps(kind, x0, eps, x, c.alpha, c.sigma, c.d_alpha, c.d_sigma)
    r0, re = to_x0_eps(kind, out, x, c.alpha, c.sigma, c.d_alpha, c.d_sigma)
    assert torch.allclose(r0, x0, atol=1e-8) and torch.allclose(re, eps, atol=1e-8)


def test_known_forms() -> None:
    """v = alpha eps - sigma x0, score = -eps / sigma, velocity = alpha' x0 + sigma' eps."""
    p = VP()
    x0, eps = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    t = torch.full((8,), 0.4, dtype=torch.float64)
    c = p.at(t, x0, Euclidean())
    x = c.alpha * x0 + c.sigma * eps
    args = (x0, eps, x, c.alpha, c.sigma, c.d_alpha, c.d_sigma)
    assert torch.allclose(from_x0_eps("v", *args), c.alpha * eps - c.sigma * x0)
    assert torch.allclose(from_x0_eps("score", *args), -eps / c.sigma)
    assert torch.allclose(from_x0_eps("velocity", *args), c.d_alpha * x0 + c.d_sigma * eps)


class _Echo(nn.Module):
    def forward(self, x, t, **kw):
        return x * 0.5


def test_denoiser_prediction_properties_and_shape_check() -> None:
    d = Denoiser(_Echo(), VP(), prediction="eps")
    x = torch.randn(4, 3)
    p = d(x, 0.5, Euclidean())
    assert torch.allclose(p.eps, 0.5 * x)
    assert torch.allclose(p.score, -p.eps / p.coef.sigma)

    class Bad(nn.Module):
        def forward(self, x, t, **kw):
            return x[:, :2]

    with pytest.raises(ValueError, match="expected"):
        Denoiser(Bad(), VP())(x, 0.5, Euclidean())
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(_Echo(), VP(), prediction="noise")  # type: ignore[arg-type]

"""Losses: per-sample shape, masks, weightings, and the exact denoiser minimises them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.geometry import Masked
from workbench.losses import DenoisingScoreMatching, FlowMatching
from workbench.precond import Denoiser
from workbench.processes import VP, LinearInterpolant


class _Lin(nn.Module):
    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.w = nn.Linear(d, d)

    def forward(self, x, t, **kw):
        return self.w(x)


def test_per_sample_and_masked() -> None:
    d = Denoiser(_Lin(), VP())
    x0 = torch.randn(6, 4, 3)
    mask = torch.ones(6, 4)
    mask[:, 3] = 0
    g = Masked().bind(mask)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = DenoisingScoreMatching()(d, x0, geometry=g, generator=gen())
    x0b = x0.clone()
    x0b[:, 3] = 100.0  # padded entries must not matter
    b = DenoisingScoreMatching()(d, x0b, geometry=g, generator=gen())
    assert a.loss.shape == (6,)
    assert torch.allclose(a.loss, b.loss)


def test_weightings() -> None:
    d = Denoiser(_Lin(2), VP())
    x0 = torch.randn(16, 2)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    from workbench.geometry import Euclidean

    base = DenoisingScoreMatching()(d, x0, geometry=Euclidean(), generator=gen())
    s2 = DenoisingScoreMatching(weighting="sigma2")(d, x0, geometry=Euclidean(), generator=gen())
    sig = VP().sigma(base.t)
    assert torch.allclose(s2.loss, base.loss * sig**2, rtol=1e-5)
    lik = DenoisingScoreMatching(weighting="likelihood")(d, x0, geometry=Euclidean(), generator=gen())
    assert torch.allclose(lik.loss, base.loss * VP().beta(base.t) / sig**2, rtol=1e-4)
    with pytest.raises(ValueError):
        DenoisingScoreMatching(weighting="bogus")  # type: ignore[arg-type]


def test_exact_denoiser_beats_perturbed(gaussian2d) -> None:
    """For Gaussian data the posterior-mean network has lower expected x0-loss than a perturbed one."""
    from workbench.geometry import Euclidean
    from workbench.testing import GaussianDenoiser

    mean, cov = gaussian2d
    p = VP()
    exact = GaussianDenoiser(p, mean, cov)

    class Net(nn.Module):
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.shift = shift

        def forward(self, x, t, **kw):
            return exact(x, kw["t_real"], Euclidean()).x0 + self.shift

    x0 = torch.distributions.MultivariateNormal(mean, cov).sample((4000,))
    losses = []
    for shift in (0.0, 0.3):
        d = Denoiser(Net(shift), p, prediction="x0")
        # pass the true t through extras so the toy net can call the analytic posterior mean
        gen = torch.Generator().manual_seed(5)
        t = p.sample_t(4000, generator=gen)
        eps = torch.randn(4000, 2, generator=gen)
        xt = p.marginal(x0, t, eps, Euclidean())
        out = d.raw(xt, t, p.at(t, x0, Euclidean()), t_real=t)
        losses.append(float(((out - x0) ** 2).mean()))
    assert losses[0] < losses[1]


def test_flow_matching_needs_velocity() -> None:
    from workbench.geometry import Euclidean

    with pytest.raises(ValueError, match="velocity"):
        FlowMatching()(Denoiser(_Lin(2), LinearInterpolant()), torch.randn(4, 2), geometry=Euclidean())
    out = FlowMatching()(Denoiser(_Lin(2), LinearInterpolant(), prediction="velocity"), torch.randn(4, 2),
                         geometry=Euclidean())
    assert out.loss.shape == (4,)

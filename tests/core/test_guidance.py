"""Guidance wrappers on Gaussian data, where the conditionals are known."""
from __future__ import annotations

import torch
from torch import nn

from workbench.geometry import Euclidean
from workbench.guidance import DPS, ClassifierFreeGuidance, Replacement
from workbench.precond import Denoiser
from workbench.processes import VP
from workbench.samplers import sample_ode, sample_pc
from workbench.testing import GaussianDenoiser


def _conditional(mean, cov, y1):
    """Mean and variance of x2 | x1 = y1."""
    m = mean[1] + cov[1, 0] / cov[0, 0] * (y1 - mean[0])
    v = cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
    return float(m), float(v)


def test_replacement_inpaints_gaussian(gaussian2d) -> None:
    mean, cov = gaussian2d
    p = VP()
    y = torch.tensor([2.0, 0.0]).expand(3000, 2)
    mask = torch.tensor([1.0, 0.0]).expand(3000, 2)
    model = Replacement(GaussianDenoiser(p, mean, cov), y, mask, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = p.prior_sample(torch.zeros(3000, 2), Euclidean(), generator=g)
    out = sample_pc(model, x, p.time_grid(500), process=p, geometry=Euclidean(), snr=0.05, generator=g)
    assert torch.allclose(out[:, 0], torch.full((3000,), 2.0), atol=1e-3)
    # Replacement is an approximation of the conditional (Song et al. 2021, App. I.2): with this
    # strongly correlated pair it lands within 0.2 of the conditional mean -1.4, far from the
    # unconditional -2.0, with the conditional spread.
    m, v = _conditional(mean, cov, 2.0)
    assert abs(float(out[:, 1].mean()) - m) < 0.2, (float(out[:, 1].mean()), m)
    assert abs(float(out[:, 1].mean()) - float(mean[1])) > 0.4
    assert abs(float(out[:, 1].var()) - v) < 0.1


def test_dps_pulls_towards_measurement(gaussian2d) -> None:
    mean, cov = gaussian2d
    p = VP()
    y = torch.full((2000, 1), 2.0)
    model = DPS(GaussianDenoiser(p, mean, cov), lambda x0: x0[:, :1], y, zeta=20.0, squared=True)
    g = torch.Generator().manual_seed(2)
    x = p.prior_sample(torch.zeros(2000, 2), Euclidean(), generator=g)
    out = sample_pc(model, x, p.time_grid(300), process=p, geometry=Euclidean(), snr=0.0, generator=g)
    m, _ = _conditional(mean, cov, 2.0)
    assert abs(float(out[:, 0].mean()) - 2.0) < 0.2
    assert abs(float(out[:, 1].mean()) - m) < 0.25


class _CondNet(nn.Module):
    """eps = x - c for cond c, eps = x for no condition."""

    def forward(self, x, t, cond=None, **kw):
        return x if cond is None else x - cond[:, None].float()


def test_cfg_combines_eps() -> None:
    p = VP()
    d = Denoiser(_CondNet(), p)
    x, c = torch.randn(5, 2), torch.ones(5)
    for w in (0.0, 1.0, 3.0):
        out = ClassifierFreeGuidance(d, w)(x, 0.5, Euclidean(), cond=c)
        assert torch.allclose(out.eps, (1 + w) * (x - 1) - w * x, atol=1e-6)
        assert torch.allclose(out.x0 * out.coef.alpha + out.coef.sigma * out.eps, x, atol=1e-5)
    unc = ClassifierFreeGuidance(d, 2.0)(x, 0.5, Euclidean())
    assert torch.allclose(unc.eps, x)
    s = sample_ode(ClassifierFreeGuidance(d, 1.0), torch.randn(5, 2), p.time_grid(4), process=p,
                   geometry=Euclidean(), extra_args={"cond": c})
    assert s.shape == (5, 2) and torch.isfinite(s).all()

"""PF-ODE log-likelihood against the analytic log-density of Gaussian data."""
from __future__ import annotations

import pytest
import torch

from workbench.geometry import Euclidean
from workbench.likelihood import log_likelihood
from workbench.processes import VE, VP, LinearInterpolant
from workbench.testing import GaussianDenoiser, gaussian_logpdf


def _reference(process, x, mean, cov):
    t0 = torch.tensor(process.t_end, dtype=torch.float64)
    a, s = process.alpha(t0), process.sigma(t0)
    return gaussian_logpdf(x, a * mean, a * a * cov + s * s * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("process", [VP(), VE(0.01, 50.0), LinearInterpolant()], ids=lambda p: type(p).__name__)
def test_exact_divergence_matches_analytic(process, gaussian2d) -> None:
    mean, cov = gaussian2d
    if isinstance(process, VE):  # VE's prior N(0, sigma_max^2) ignores the data mean: centre the data
        mean = torch.zeros(2)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((32,))
    out = log_likelihood(GaussianDenoiser(process, mean, cov), x, process=process, geometry=Euclidean(),
                         steps=400 if isinstance(process, VE) else 150, estimator="exact")
    err = (out.logp.double() - _reference(process, x, mean, cov)).abs()
    assert err.max() < 0.06, err.max()
    assert torch.allclose(out.bpd, -out.logp / (2 * torch.log(torch.tensor(2.0))))
    assert out.nfe == 2 * (400 if isinstance(process, VE) else 150)


def test_hutchinson_is_unbiased(gaussian2d) -> None:
    process = VP()
    mean, cov = gaussian2d
    x = torch.distributions.MultivariateNormal(mean, cov).sample((16,))
    ref = _reference(process, x, mean, cov)
    g = torch.Generator().manual_seed(3)
    out = log_likelihood(GaussianDenoiser(process, mean, cov), x, process=process, geometry=Euclidean(),
                         steps=100, estimator="hutchinson", n_probes=64, generator=g)
    err = out.logp.double() - ref
    assert err.abs().mean() < 0.25, err
    assert abs(float(err.mean())) < 0.1

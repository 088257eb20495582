"""Losses: per-sample shape, masks, weightings, and the exact denoiser minimises them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean, Masked
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


class _Known(nn.Module):
    """A network whose output is known: 0.5 x + 0.1 per variable (no parameters, ignores t)."""

    def forward(self, x, t, **kw):
        return {k: 0.5 * v + 0.1 for k, v in x.items()} if isinstance(x, dict) else 0.5 * x + 0.1


def _vp_by_hand(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0):
    """alpha, sigma and g^2 = beta(t) of the VP SDE, written out (Song et al. 2021, Eq. 33)."""
    alpha = torch.exp(-0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min)
    return alpha, torch.sqrt(1 - alpha**2), beta_min + t * (beta_max - beta_min)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighting", ["uniform", "sigma2", "likelihood", "min_snr"])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_dsm_equals_the_hand_computed_loss(weighting: str, reduction: str, prediction: str) -> None:
    """At fixed t and noise, with a network of known output and a padding mask, the loss is
    w(t) * (mean or sum over the valid entries of (net(x_t) - target)^2), x_t = alpha x0 + sigma eps
    on the valid entries, target = eps or x0; w = 1, sigma^2, beta / sigma^2, min(SNR, 5) / SNR."""
    B, N, F = 4, 3, 2
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(B, N, F, generator=g, dtype=torch.float64)
    eps = torch.randn(B, N, F, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.float64)
    out = DenoisingScoreMatching(weighting=weighting, reduction=reduction)(
        Denoiser(_Known(), VP(), prediction=prediction), x0, geometry=Masked().bind(mask), t=t, noise=eps)

    a, s, beta = (v[:, None, None] for v in _vp_by_hand(t))
    m = mask[..., None]
    xt = (a * x0 + s * eps) * m
    target = eps if prediction == "eps" else x0
    err = ((0.5 * xt + 0.1 - target) ** 2 * m).sum((1, 2))
    if reduction == "mean":
        err = err / (mask.sum(1) * F)
    a, s, beta = a.flatten(), s.flatten(), beta.flatten()
    snr = a**2 / s**2
    w = {"uniform": torch.ones(B, dtype=torch.float64), "sigma2": s**2, "likelihood": beta / s**2,
         "min_snr": snr.clamp(max=5.0) / snr}[weighting]
    assert out.loss.shape == (B,) and torch.equal(out.t, t)
    torch.testing.assert_close(out.loss, w * err, rtol=1e-10, atol=1e-12)
    # the samples differ in weight (min-SNR: on both sides of its clamp) and in valid entries
    if weighting == "min_snr":
        assert (w < 1).any() and (w == 1).any()
    elif weighting != "uniform":
        assert len(set(w.tolist())) == B


def test_dsm_dict_state_parts_and_key_weights() -> None:
    """A dict state: one part per variable (each the mean of its own squared error) and the
    loss their key-weighted sum."""
    g = torch.Generator().manual_seed(3)
    x0 = {"a": torch.randn(5, 2, generator=g, dtype=torch.float64),
          "b": torch.randn(5, 3, generator=g, dtype=torch.float64)}
    eps = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in x0.items()}
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    out = DenoisingScoreMatching(key_weights={"b": 3.0})(Denoiser(_Known(), VP()), x0, geometry=Euclidean(),
                                                          t=t, noise=eps)
    a, s, _ = (v[:, None] for v in _vp_by_hand(t))
    parts = {k: ((0.5 * (a * x0[k] + s * eps[k]) + 0.1 - eps[k]) ** 2).mean(1) for k in x0}
    torch.testing.assert_close(out.parts["a"], parts["a"])
    torch.testing.assert_close(out.parts["b"], parts["b"])
    torch.testing.assert_close(out.loss, parts["a"] + 3.0 * parts["b"])


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


def test_gaussian_denoiser_solves_large_batches_under_two_threads() -> None:
    """Bug: ``GaussianDenoiser`` through batched LU (``torch.linalg.solve``): MKL's pivot error
    ("DLASWP parameter 6") on a batch of 256 x 256 systems under 2 torch threads. Checked against
    the same posterior mean in the covariance's eigenbasis (VE: alpha = 1)."""
    from workbench.geometry import Euclidean
    from workbench.processes import VE
    from workbench.testing import GaussianDenoiser

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        h = 16
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
        pts = torch.stack([ii.flatten(), jj.flatten()], 1).double()
        cov = 0.05 * torch.exp(-((pts[:, None] - pts[None]) ** 2).sum(-1) / 18) + 1e-4 * torch.eye(h * h, dtype=torch.float64)
        mean = 0.5 * torch.ones(h * h, dtype=torch.float64)
        process = VE(sigma_min=0.01, sigma_max=10.0)
        x = torch.randn(8, 1, h, h, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        t = torch.linspace(0.05, 1.0, 8, dtype=torch.float64)
        x0 = GaussianDenoiser(process, mean, cov)(x, t, Euclidean()).x0
        w, v = torch.linalg.eigh(cov)
        s2 = process.at(t, x, Euclidean()).sigma.flatten() ** 2
        ref = mean + ((x.flatten(1) - mean) @ v * (w / (w + s2[:, None]))) @ v.T
        assert torch.allclose(x0.flatten(1), ref, atol=1e-9)
    finally:
        torch.set_num_threads(old)

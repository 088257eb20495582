"""Per-element noise schedules: a 2-channel state under PerChannelProcess([p0, p1]) behaves exactly like
two separate single-channel states under p0 and p1: marginals, losses (every weighting), samples of
every sampler under the same noise, and the PF-ODE likelihood (the sum of the two)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean, Masked, Product
from workbench.likelihood import log_likelihood
from workbench.losses import DenoisingScoreMatching
from workbench.precond import Denoiser
from workbench.processes import EDM, VE, VP, JointProcess, PerChannelProcess, SubVP
from workbench.samplers import sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc, sample_s4
from workbench.samplers.common import sampler_grid
from workbench.testing import GaussianDenoiser, gaussian_logpdf

# two schedules on one time range: VP (beta 0.1..20) and VE (sigma 0.01..50, prior std 50), or a slower sub-VP
PAIRS = {
    "vp_ve": lambda: (VP(0.1, 20.0), VE(0.01, 50.0)),
    "vp_subvp": lambda: (VP(0.1, 20.0), SubVP(0.1, 8.0)),
}
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
STD = torch.tensor([0.6, 1.3], dtype=torch.float64)

# (function, kwargs, steps)
SAMPLERS = {
    "euler_maruyama": (sample_euler_maruyama, {}, 30),
    "pc": (sample_pc, {"snr": 0.1}, 20),
    "pc_ancestral_corrector_first": (sample_pc, {"snr": 0.1, "predictor": "ancestral", "corrector_first": True}, 20),
    "pc_euler_no_corrector": (sample_pc, {"predictor": "euler_maruyama", "corrector": "none"}, 30),
    "s4": (sample_s4, {"snr": 0.1}, 20),
    "s4_denoise": (sample_s4, {"snr": 0.1, "denoise": True}, 20),
    "ode_euler": (sample_ode, {"method": "euler"}, 30),
    "ode_heun": (sample_ode, {"method": "heun"}, 20),
    "ddim": (sample_ddim, {}, 20),
    "ddpm_ancestral": (sample_ddim, {"eta": 1.0}, 20),
    "dpm_solver": (sample_dpm_solver, {}, 20),
}


class _SharedNoise(Euclidean):
    """Draws every noise tensor as the full ``[B, 2]`` draw of (seed + call number) and returns the
    channels it stands for, so a 2-channel run and two 1-channel runs see the same noise."""

    def __init__(self, channels: slice = slice(None), seed: int = 0) -> None:
        super().__init__()
        self.channels, self.seed, self.calls = channels, seed, [0]

    def _randn(self, x, generator):
        g = torch.Generator().manual_seed(self.seed + self.calls[0])
        self.calls[0] += 1
        return torch.randn(x.shape[0], 2, generator=g, dtype=x.dtype)[:, self.channels]


def _setup(pair: str):
    p0, p1 = PAIRS[pair]()
    pc = PerChannelProcess([p0, p1], dim=1)
    return pc, (p0, p1)


def _close(a, b, tol=1e-9):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_coefficients_and_marginals_per_channel(pair: str) -> None:
    pc, ps = _setup(pair)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = pc.sample_t(64, generator=g).double()
    assert pc.coefficients(t).alpha.shape == (64, 2)
    xt = pc.marginal(x0, t, eps, Euclidean())
    c = pc.at(t, x0, Euclidean())
    for k, p in enumerate(ps):
        _close(xt[:, k:k + 1], p.marginal(x0[:, k:k + 1], t, eps[:, k:k + 1], Euclidean()))
        ck = p.at(t, x0[:, k:k + 1], Euclidean())
        for f in ("alpha", "sigma", "d_alpha", "d_sigma", "f", "g2", "log_snr"):
            _close(getattr(c, f)[:, k:k + 1], getattr(ck, f))


def test_channel_axis_and_trailing_dims() -> None:
    """dim=1 on [B, C, H, W] and dim=2 on a channel-last [B, N, C]: each channel gets its own schedule."""
    p0, p1 = VP(0.1, 20.0), VE(0.01, 50.0)
    t = torch.full((3,), 0.4, dtype=torch.float64)
    x0 = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    eps = torch.randn_like(x0)
    xt = PerChannelProcess([p0, p1], dim=1).marginal(x0, t, eps, Euclidean())
    for k, p in enumerate((p0, p1)):
        _close(xt[:, k], p.marginal(x0[:, k], t, eps[:, k], Euclidean()))
    x0 = torch.randn(3, 6, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    xt = PerChannelProcess([p0, p1], dim=2).marginal(x0, t, eps, Euclidean())
    for k, p in enumerate((p0, p1)):
        _close(xt[..., k], p.marginal(x0[..., k], t, eps[..., k], Euclidean()))
    with pytest.raises(ValueError, match="2 channel processes for axis 1"):
        PerChannelProcess([p0, p1]).at(t, torch.zeros(3, 3), Euclidean())
    with pytest.raises(ValueError, match="does not broadcast"):
        Euclidean().expand(torch.zeros(3, 4), torch.zeros(3, 2))


class _ElementwiseNet(nn.Module):
    """out = tanh(w_c x + b_c t): one small map per channel, so it splits into per-channel nets."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(b.clone())

    def forward(self, x, t, **_):
        return torch.tanh(self.w * x + self.b * t[:, None])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("weighting", ["uniform", "sigma2", "likelihood", "min_snr"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_loss_equals_separate_channels(pair: str, weighting: str, prediction: str, reduction: str) -> None:
    pc, ps = _setup(pair)
    w, b = torch.tensor([0.7, -1.2], dtype=torch.float64), torch.tensor([0.3, 0.9], dtype=torch.float64)
    loss = DenoisingScoreMatching(weighting=weighting, reduction=reduction, min_snr_gamma=2.0)
    g = torch.Generator().manual_seed(1)
    x0 = MEAN + STD * torch.randn(256, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(256, 2, generator=g, dtype=torch.float64)
    t = pc.sample_t(256, generator=g).double()
    merged = loss(Denoiser(_ElementwiseNet(w, b), pc, prediction), x0, geometry=Euclidean(), t=t, noise=eps).loss
    parts = [loss(Denoiser(_ElementwiseNet(w[k:k + 1], b[k:k + 1]), p, prediction), x0[:, k:k + 1],
                  geometry=Euclidean(), t=t, noise=eps[:, k:k + 1]).loss for k, p in enumerate(ps)]
    expected = (parts[0] + parts[1]) / (2 if reduction == "mean" else 1)
    _close(merged, expected)
    if weighting != "uniform":  # the weighting matters here: channel 1's differs from channel 0's
        assert not torch.allclose(parts[0] + parts[1], 2 * parts[0])


def _run(fn, kwargs, steps, process, denoiser, channels: slice, n: int = 256):
    geom = _SharedNoise(channels)
    width = len(range(2)[channels])
    x = process.prior_sample(torch.zeros(n, width, dtype=torch.float64), geom)
    return fn(denoiser, x, process.time_grid(steps), process=process, geometry=geom, **kwargs)


@pytest.mark.parametrize("sname", list(SAMPLERS))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_sampler_equals_separate_channels(pair: str, sname: str) -> None:
    """Same noise, exact Gaussian denoiser: each channel of the 2-channel sample is the sample of
    its own process (the Langevin corrector's step size is per channel, as it is per process)."""
    fn, kwargs, steps = SAMPLERS[sname]
    pc, ps = _setup(pair)
    merged = _run(fn, kwargs, steps, pc, GaussianDenoiser(pc, MEAN, torch.diag(STD**2)), slice(None))
    assert merged.shape == (256, 2) and torch.isfinite(merged).all()
    for k, p in enumerate(ps):
        single = _run(fn, kwargs, steps, p, GaussianDenoiser(p, MEAN[k:k + 1], STD[k:k + 1, None] ** 2),
                      slice(k, k + 1))
        _close(merged[:, k:k + 1], single, tol=1e-8)


def test_sampler_recovers_per_channel_gaussian() -> None:
    pc, _ = _setup("vp_ve")
    model = GaussianDenoiser(pc, MEAN, torch.diag(STD**2))
    g = torch.Generator().manual_seed(0)
    x = pc.prior_sample(torch.zeros(4000, 2, dtype=torch.float64), Euclidean(), generator=g)
    out = sample_ode(model, x, pc.time_grid(60), process=pc, geometry=Euclidean())
    assert (out.mean(0) - MEAN).abs().max() < 0.1, out.mean(0)
    assert (out.std(0) - STD).abs().max() < 0.08, out.std(0)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_likelihood_is_sum_of_channels(pair: str) -> None:
    pc, ps = _setup(pair)
    g = torch.Generator().manual_seed(2)
    x = MEAN + STD * torch.randn(16, 2, generator=g, dtype=torch.float64)
    steps = 200 if pair == "vp_ve" else 50  # only vp_ve is also checked against the analytic density
    merged = log_likelihood(GaussianDenoiser(pc, MEAN, torch.diag(STD**2)), x, process=pc, geometry=Euclidean(),
                            steps=steps, estimator="exact")
    singles = [log_likelihood(GaussianDenoiser(p, MEAN[k:k + 1], STD[k:k + 1, None] ** 2), x[:, k:k + 1],
                              process=p, geometry=Euclidean(), steps=steps, estimator="exact")
               for k, p in enumerate(ps)]
    _close(merged.prior_logp, singles[0].prior_logp + singles[1].prior_logp)
    _close(merged.delta_logp, singles[0].delta_logp + singles[1].delta_logp)
    _close(merged.logp, singles[0].logp + singles[1].logp)
    if pair != "vp_ve":  # the slower sub-VP has not reached its prior at t = 1: no analytic check
        return
    # and against the analytic density at t_end, channel by channel
    t0 = torch.tensor(pc.t_end, dtype=torch.float64)
    ref = sum(gaussian_logpdf(x[:, k:k + 1], p.alpha(t0) * MEAN[k:k + 1],
                              (p.alpha(t0) * STD[k]) ** 2 + p.sigma(t0) ** 2 * torch.ones(1, 1, dtype=torch.float64))
              for k, p in enumerate(ps))
    # VE's prior N(0, 50^2) ignores the data mean (as in test_likelihood): compare loosely
    assert (merged.logp - ref).abs().max() < 0.1


def test_prior_per_channel() -> None:
    pc, (p0, p1) = _setup("vp_ve")
    x = pc.prior_sample(torch.zeros(20000, 2, dtype=torch.float64), Euclidean(), generator=torch.Generator().manual_seed(0))
    assert abs(float(x[:, 0].std()) - 1.0) < 0.03 and abs(float(x[:, 1].std()) - 50.0) < 1.5
    lp = pc.prior_logp(x[:5], Euclidean())
    ref = (-0.5 * x[:5, 0] ** 2 - 0.5 * math.log(2 * math.pi)
           - 0.5 * (x[:5, 1] / 50) ** 2 - 0.5 * math.log(2 * math.pi * 2500))
    _close(lp, ref)
    # absent entries (mask) have no density: the per-channel normaliser counts existing entries only
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    lpm = pc.prior_logp(x[:5] * mask, Masked().bind(mask))
    ref0 = -0.5 * x[:5, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    ref1 = -0.5 * (x[:5, 1] / 50) ** 2 - 0.5 * math.log(2 * math.pi * 2500)
    _close(lpm, mask[:, 0] * ref0 + mask[:, 1] * ref1)


def test_grids_refused_or_shared() -> None:
    pc, _ = _setup("vp_ve")
    for spacing in ("logsnr", "karras"):
        with pytest.raises(ValueError, match="channels of this PerChannelProcess have different"):
            pc.time_grid(10, spacing=spacing)
    assert torch.equal(pc.time_grid(10), VP().time_grid(10))
    assert torch.equal(pc.time_grid(10, spacing="quadratic"), VP().time_grid(10, spacing="quadratic"))
    # samplers built for a noise-level grid run on the process's default (uniform in t) grid
    assert torch.equal(sampler_grid(pc, sample_dpm_solver, 10), pc.time_grid(10))
    with pytest.raises(ValueError, match="different ones"):
        sampler_grid(pc, sample_dpm_solver, 10, spacing="logsnr")
    same = PerChannelProcess([VP(0.1, 20.0), VP(0.1, 20.0)])
    assert torch.equal(same.time_grid(10, spacing="logsnr"), VP(0.1, 20.0).time_grid(10, spacing="logsnr"))


def test_refusals() -> None:
    pc, _ = _setup("vp_ve")
    with pytest.raises(ValueError, match="EDM preconditioning.*channels"):
        Denoiser(nn.Identity(), pc, "edm")
    Denoiser(nn.Identity(), PerChannelProcess([VP(), VP()]), "edm")  # one shared noise level: fine
    with pytest.raises(ValueError, match="different time range"):
        PerChannelProcess([VP(), EDM()])
    with pytest.raises(ValueError, match="dim must be"):
        PerChannelProcess([VP(), VE()], dim=0)
    with pytest.raises(ValueError, match="Tensor state"):
        pc.at(0.5, {"a": torch.zeros(2, 2)}, Euclidean())


def test_inside_joint_process() -> None:
    """A PerChannelProcess as one variable of a JointProcess: per-channel coefficients and prior there."""
    jp = JointProcess(a=PerChannelProcess([VP(0.1, 20.0), VE(0.01, 50.0)]), b=VP(0.1, 20.0))
    x0 = {"a": torch.randn(8, 2, dtype=torch.float64), "b": torch.randn(8, 3, dtype=torch.float64)}
    eps = {k: torch.randn_like(v) for k, v in x0.items()}
    t = torch.full((8,), 0.3, dtype=torch.float64)
    geom = Product(a=Euclidean(), b=Euclidean())
    xt = jp.marginal(x0, t, eps, geom)
    _close(xt["a"][:, 1:], VE(0.01, 50.0).marginal(x0["a"][:, 1:], t, eps["a"][:, 1:], Euclidean()))
    _close(xt["b"], VP(0.1, 20.0).marginal(x0["b"], t, eps["b"], Euclidean()))
    x = jp.prior_sample({"a": torch.zeros(4000, 2), "b": torch.zeros(4000, 3)}, geom)
    assert abs(float(x["a"][:, 1].std()) - 50.0) < 2.5 and abs(float(x["a"][:, 0].std()) - 1.0) < 0.05
    with pytest.raises(ValueError, match="different ones"):
        jp.time_grid(5, spacing="logsnr")


def test_noisy_data_consistency_refuses_per_element_noise_levels() -> None:
    """Guards y_t = alpha y + sigma A z taking the first channel's alpha / sigma for every channel."""
    from workbench.guidance.data_consistency import DataConsistency
    from workbench.operators import Mask
    from workbench.processes import VE, VP, PerChannelProcess
    from workbench.testing import GaussianDenoiser

    process = PerChannelProcess([VP(), VE(0.01, 50.0)], dim=1)
    den = GaussianDenoiser(process, torch.zeros(2), torch.eye(2))
    mask = torch.tensor([[1.0, 0.0]]).expand(3, 2)
    dc = DataConsistency(den, Mask(mask), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one noise level per sample"):
        dc.target(torch.zeros(3, 2), torch.full((3,), 0.5))
    same = DataConsistency(GaussianDenoiser(VP(), torch.zeros(2), torch.eye(2)), Mask(mask), torch.zeros(3, 2))
    assert torch.isfinite(same.target(torch.zeros(3, 2), torch.full((3,), 0.5))).all()

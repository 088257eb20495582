"""Samplers on the grids they are built for, and the discrete DDPM as a continuous-time process.

Each test here failed on the code before issue 10 point 12 (see the test's docstring for the bug it
catches): the default grids and DPM-Solver's final step, DiscreteDDPM's grids, interpolation and
grid-time precision, and ``sample_pc(denoise=False)``.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean
from workbench.lit import DiffusionModule
from workbench.processes import EDM, VE, VP, DiscreteDDPM, JointProcess, LinearInterpolant
from workbench.samplers import sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc, sample_s4
from workbench.samplers.common import default_spacing, sampler_grid
from workbench.samplers.pc import reverse_step
from workbench.testing import GaussianDenoiser

MEAN = torch.tensor([1.0, -2.0])
_CHOL = torch.tensor([[1.0, 0.0], [0.6, 0.5]])
COV = _CHOL @ _CHOL.T


def _exact_flow(process, x_T: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """The exact PF-ODE solution from ts[0] to ts[-1] for N(MEAN, COV) data, then E[x0 | x_end].

    In the eigenbasis of COV (eigenvalues c), y = x - alpha MEAN scales as sqrt(alpha^2 c + sigma^2).
    """
    c = process.coefficients(torch.tensor([float(ts[0]), float(ts[-1])], dtype=torch.float64))
    a_T, s_T, a_e, s_e = (float(v) for v in (c.alpha[0], c.sigma[0], c.alpha[1], c.sigma[1]))
    ev, u = torch.linalg.eigh(COV.double())
    y = (x_T.double() - a_T * MEAN.double()) @ u
    y0 = y * a_e * ev / torch.sqrt(a_e**2 * ev + s_e**2) / torch.sqrt(a_T**2 * ev + s_T**2)
    return MEAN.double() + y0 @ u.T


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).sum(1).mean().sqrt())


class _Zero(nn.Module):
    def forward(self, x, t, **extras):
        return torch.zeros_like(x)


class _Counted(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.nfe = inner, 0

    def forward(self, *args, **kwargs):
        self.nfe += 1
        return self.inner(*args, **kwargs)


def _module(process) -> DiffusionModule:
    """A DiffusionModule whose denoiser is the exact Gaussian one (counted)."""
    m = DiffusionModule(_Zero(), process)
    m.denoiser = _Counted(GaussianDenoiser(process, MEAN, COV))
    return m


# -- default grids and DPM-Solver's final step ----------------------------------------------------

@pytest.mark.parametrize("name", ["vp", "edm", "ddpm"])
def test_dpm_solver_at_10_nfe_on_its_default_grid(name: str) -> None:
    """DiffusionModule.sample with DPM-Solver++(2M) and no spacing, 9 steps + the final denoising
    = 10 NFE, against the exact PF-ODE solution on the same prior draws. On its log-SNR grid with
    the first-order last step the RMS error is 0.035-0.048 (data std ~1); on the grid it got before
    (uniform in t; EDM's rho grid) without that step it was 0.20-0.37."""
    process = {"vp": VP(), "edm": EDM(), "ddpm": DiscreteDDPM(1000)}[name]
    module = _module(process)
    x_T = process.prior_sample(torch.zeros(2000, 2), Euclidean(), generator=torch.Generator().manual_seed(0))
    out = module.sample({"x": torch.zeros(2000, 2)}, sampler=functools.partial(sample_dpm_solver), steps=9,
                        generator=torch.Generator().manual_seed(0))
    assert module.denoiser.nfe == 10
    ts = process.time_grid(9, spacing="logsnr")
    assert _rms(out, _exact_flow(process, x_T, ts)) < 0.08


def test_dpm_solver_lower_order_final_step() -> None:
    """On the uniform-in-t grid (a large last log-SNR jump) DPM-Solver++(2M) with 10 NFE must beat
    first-order DDIM on the same grid: 0.12 vs 0.24 with the first-order final step, 0.37 without."""
    p = VP()
    ts = p.time_grid(9, spacing="time")
    x = p.prior_sample(torch.zeros(2000, 2), Euclidean(), generator=torch.Generator().manual_seed(0))
    den = GaussianDenoiser(p, MEAN, COV)
    exact = _exact_flow(p, x, ts)
    err_dpm = _rms(sample_dpm_solver(den, x, ts, process=p, geometry=Euclidean()), exact)
    err_ddim = _rms(sample_ddim(den, x, ts, process=p, geometry=Euclidean()), exact)
    assert err_dpm < 0.7 * err_ddim, (err_dpm, err_ddim)
    no_lof = _rms(sample_dpm_solver(den, x, ts, process=p, geometry=Euclidean(), lower_order_final=False), exact)
    assert no_lof > err_dpm  # the option still reaches the plain 2M step


def test_default_spacing_through_partials() -> None:
    """Each sampler carries its grid; Hydra's partials (``_partial_: true``) keep it visible."""
    assert default_spacing(sample_dpm_solver) == "logsnr"
    assert default_spacing(functools.partial(sample_dpm_solver)) == "logsnr"
    assert default_spacing(functools.partial(sample_ode, method="heun")) == "karras"
    assert default_spacing(sample_ode) == "karras"  # heun is sample_ode's default method
    assert default_spacing(functools.partial(functools.partial(sample_ode, method="heun"), method="euler")) \
        == default_spacing(sample_ode, method="euler")
    assert default_spacing(functools.partial(sample_ode, method="euler")) == "logsnr"
    assert default_spacing(functools.partial(sample_ddim, eta=1.0)) == "logsnr"
    for fn in (sample_euler_maruyama, sample_pc, sample_s4):  # the process's own grid (Song et al., GDSS)
        assert default_spacing(functools.partial(fn)) is None


def test_sampler_grid_resolution() -> None:
    """An explicit spacing wins; else the sampler's; a JointProcess that refuses a noise-level grid
    (different schedules per variable) falls back to its own default instead of failing."""
    vp = VP()
    assert torch.equal(sampler_grid(vp, sample_dpm_solver, 6), vp.time_grid(6, spacing="logsnr"))
    assert torch.equal(sampler_grid(vp, sample_dpm_solver, 6, spacing="time"), vp.time_grid(6))
    heun = functools.partial(sample_ode, method="heun")
    assert torch.equal(sampler_grid(vp, heun, 6), vp.time_grid(6, spacing="karras"))
    jp = JointProcess(x=VP(0.1, 20.0), adj=VE(0.01, 50.0))
    assert torch.equal(sampler_grid(jp, sample_dpm_solver, 6), jp.time_grid(6))


def test_karras_grid_for_any_process() -> None:
    """spacing="karras": sigma/alpha at the grid times follows EDM's Eq. 5 (rho = 7) between the
    process's ends; on EDM it is EDM's own closed-form grid."""
    for p in (VP(), VE(0.01, 50.0), LinearInterpolant()):
        g = p.time_grid(8, spacing="karras")
        assert g.dtype == torch.float64 and len(g) == 9 and (g[1:] < g[:-1]).all()
        c = p.coefficients(g)
        r = (c.sigma / c.alpha)[1:] if isinstance(p, LinearInterpolant) else c.sigma / c.alpha
        root = r ** (1 / 7)
        d = root[1:] - root[:-1]
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6)
    edm = EDM()
    base = super(EDM, edm).time_grid(8, spacing="karras")
    assert torch.allclose(base, edm.time_grid(8), rtol=1e-9)


# -- DiscreteDDPM: grids, interpolation, exact grid times ------------------------------------------

@pytest.mark.parametrize("spacing", ["time", "quadratic", "logsnr", "karras"])
@pytest.mark.parametrize("steps", [1, 10, 106, 500, 999])
def test_ddpm_grids(spacing: str, steps: int) -> None:
    """Every spacing and every step count in [1, T-1] gives steps + 1 distinct DDPM steps from T
    to 1 (the log-SNR grid was refused, and the quadratic one raised for every count >= 106)."""
    p = DiscreteDDPM(1000)
    g = p.time_grid(steps, spacing=spacing)
    i = g * p.steps
    assert len(g) == steps + 1 and (g[1:] < g[:-1]).all()
    assert torch.equal(i, i.round()) and float(i[0]) == 1000 and float(i[-1]) == 1


def test_ddpm_logsnr_grid_follows_lambda() -> None:
    """With few steps the DDPM log-SNR grid is the continuous one rounded to steps."""
    p = DiscreteDDPM(1000)
    cont = super(DiscreteDDPM, p).time_grid(10, spacing="logsnr") * 1000
    assert ((p.time_grid(10, spacing="logsnr") * 1000 - cont).abs() <= 0.5 + 1e-9).all()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_interpolation_is_smooth_and_exact(schedule: str) -> None:
    """alpha and sigma are exact at the steps; their time derivatives are continuous across the
    steps (piecewise-linear log alpha / log sigma^2 had slopes jumping by up to ~70% there) and
    are the derivatives of alpha and sigma (finite differences)."""
    p = DiscreteDDPM(1000, schedule)
    k = torch.arange(1, 1001, dtype=torch.float64)
    abar = torch.cumprod(1 - p.betas, 0)
    assert torch.allclose(p.alpha(k / 1000), abar.sqrt(), rtol=1e-12, atol=0)
    assert torch.allclose(p.sigma(k / 1000), (1 - abar).sqrt(), rtol=1e-12, atol=0)
    inner = k[1:-1] / 1000
    for d in (p.d_alpha, p.d_sigma):
        left, right = d(inner - 1e-6), d(inner + 1e-6)
        assert ((left - right).abs() / right.abs()).max() < 1e-2
    t = (torch.arange(1, 999, dtype=torch.float64) + 0.37) / 1000  # between steps (a grid time up to
    for f, d in ((p.alpha, p.d_alpha), (p.sigma, p.d_sigma)):      # 1e-7 counts as the step itself)
        fd = (f(t + 1e-5) - f(t - 1e-5)) / 2e-5
        assert torch.allclose(fd, d(t), rtol=1e-4, atol=1e-9)


def test_heun_converges_smoothly_on_ddpm() -> None:
    """Heun's error against the exact PF-ODE decreases with every added step on a DDPM (with
    one-sided slopes at the steps it went up again between some step counts)."""
    p = DiscreteDDPM(1000)
    den = GaussianDenoiser(p, MEAN, COV)
    x = p.prior_sample(torch.zeros(500, 2), Euclidean(), generator=torch.Generator().manual_seed(0))
    errs = []
    for n in range(20, 41, 2):
        ts = p.time_grid(n)
        errs.append(_rms(sample_ode(den, x, ts, process=p, geometry=Euclidean(), method="heun"), _exact_flow(p, x, ts)))
    assert all(b < a for a, b in zip(errs, errs[1:])), errs


def test_grid_times_are_exact_ddpm_steps() -> None:
    """Grids are float64, so a DDPM grid time is its step (a float32 grid time could land on either
    side of it); a float32 copy still maps to the same step, coefficients and network time."""
    p = DiscreteDDPM(1000)
    for spacing in ("time", "quadratic", "logsnr", "karras"):
        g = p.time_grid(37, spacing=spacing)
        assert g.dtype == torch.float64
        i = g * 1000
        assert (i - i.round()).abs().max() < 1e-9
        g32 = g.float()
        assert torch.equal(p.net_time(g32), i.round().float() - 1)
        assert torch.equal(p._index(g32), i.round())
        assert torch.allclose(p.d_sigma(g32).double(), p.d_sigma(g), rtol=1e-6)
    assert VP().time_grid(5).dtype == torch.float64 and EDM().time_grid(5).dtype == torch.float64


# -- sample_pc(denoise=False) -----------------------------------------------------------------------

def test_pc_denoise_false_returns_predictor_mean() -> None:
    """With the corrector after the predictor (Song's order) the output of ``denoise=False`` is the
    last predictor's mean (score_sde / GDSS), not the noisy corrected state."""
    p = VP()
    den = GaussianDenoiser(p, MEAN, COV)
    ts = p.time_grid(3)
    x = p.prior_sample(torch.zeros(256, 2), Euclidean(), generator=torch.Generator().manual_seed(0))
    seen = {}
    out = sample_pc(den, x, ts, process=p, geometry=Euclidean(), snr=0.16, denoise=False,
                    generator=torch.Generator().manual_seed(1),
                    callback=lambda i, x, **kw: seen.__setitem__(i, x.clone()))
    x_prev = seen[len(ts) - 3]  # the state entering the last step
    t, s = ts[-2], ts[-1]
    pred = den(x_prev, t, Euclidean())
    cs = p.at(s, x_prev, Euclidean())
    _, mean = reverse_step("reverse_diffusion", x_prev, pred.score, pred.coef, cs, s - t, torch.zeros_like(x_prev))
    assert torch.allclose(out, mean, atol=1e-6)
    assert not torch.allclose(seen[len(ts) - 2], mean, atol=1e-3)  # the corrected state differs

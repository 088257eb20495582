"""Closed forms of each process, re-derived here from its SDE / definition."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from workbench.geometry import Euclidean
from workbench.processes import EDM, VE, VP, DiscreteDDPM, JointProcess, LinearInterpolant, SubVP, TrigInterpolant, make_betas

TS = [0.01, 0.1, 0.37, 0.8, 1.0]


@pytest.mark.parametrize("t", TS)
def test_vp_marginal_from_beta_integral(t: float) -> None:
    p = VP(0.1, 20.0)
    integral = quad(lambda s: 0.1 + s * (20.0 - 0.1), 0, t)[0]
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(p.alpha(tt)) == pytest.approx(math.exp(-0.5 * integral), rel=1e-10)
    assert float(p.sigma(tt)) == pytest.approx(math.sqrt(1 - math.exp(-integral)), rel=1e-10)
    c = p.coefficients(tt)
    assert float(c.f) == pytest.approx(-0.5 * (0.1 + t * 19.9), rel=1e-10)
    assert float(c.g2) == pytest.approx(0.1 + t * 19.9, rel=1e-8)


@pytest.mark.parametrize("t", TS)
def test_subvp_marginal(t: float) -> None:
    p = SubVP(0.1, 20.0)
    integral = quad(lambda s: 0.1 + s * 19.9, 0, t)[0]
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(p.sigma(tt)) == pytest.approx(1 - math.exp(-integral), rel=1e-10)
    assert float(p.coefficients(tt).g2) == pytest.approx((0.1 + t * 19.9) * (1 - math.exp(-2 * integral)), rel=1e-8)


@pytest.mark.parametrize("t", TS)
def test_ve_and_edm(t: float) -> None:
    tt = torch.tensor([t], dtype=torch.float64)
    ve = VE(0.01, 50.0)
    assert float(ve.sigma(tt)) == pytest.approx(0.01 * (50.0 / 0.01) ** t, rel=1e-10)
    assert float(ve.coefficients(tt).g2) == pytest.approx(
        2 * (0.01 * 5000**t) ** 2 * math.log(5000), rel=1e-8)  # d sigma^2 / dt
    edm = EDM()
    s = torch.tensor([0.5 + t], dtype=torch.float64)
    assert float(edm.sigma(s)) == pytest.approx(0.5 + t) and float(edm.alpha(s)) == 1.0


def test_edm_grid_is_karras() -> None:
    edm = EDM(0.002, 80.0, rho=7.0)
    g = edm.time_grid(10).double()
    i = np.arange(11) / 10
    ref = (80.0 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert np.allclose(g.numpy(), ref, rtol=1e-5)


def test_interpolants() -> None:
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    lin, trig = LinearInterpolant(), TrigInterpolant()
    assert torch.allclose(lin.alpha(t), 1 - t) and torch.allclose(lin.sigma(t), t)
    assert torch.allclose(trig.alpha(t) ** 2 + trig.sigma(t) ** 2, torch.ones_like(t))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_matches_cumprod_on_grid(kind: str) -> None:
    p = DiscreteDDPM(100, kind, 1e-4, 0.1)
    betas = make_betas(kind, 100, 1e-4, 0.1).numpy()
    abar = np.cumprod(1 - betas)
    i = np.array([1, 2, 50, 100])
    t = torch.tensor(i / 100, dtype=torch.float64)
    assert np.allclose(p.alpha(t).numpy() ** 2, abar[i - 1], rtol=1e-8)
    assert np.allclose(p.sigma(t).numpy() ** 2, 1 - abar[i - 1], rtol=1e-8)
    assert torch.equal(p.net_time(t.float()), torch.tensor(i - 1.0))
    if kind == "cosine":  # Nichol & Dhariwal Eq. 17
        f = lambda s: math.cos((s / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        assert abar[49] == pytest.approx(f(50) / f(0), rel=1e-6)


PROCESSES = {
    "vp": VP(), "subvp": SubVP(), "ve": VE(0.01, 50.0), "edm": EDM(), "linear": LinearInterpolant(),
    "trig": TrigInterpolant(), "ddpm": DiscreteDDPM(1000), "ddpm_cos": DiscreteDDPM(1000, "cosine"),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_derivatives_and_sde_consistency(name: str) -> None:
    """d_alpha, d_sigma are the time derivatives, and the Fokker-Planck variance ODE
    dVar/dt = 2 f Var + g^2 holds for data of variance v0 (Song et al. 2021, Eq. 5.51)."""
    p = PROCESSES[name]
    lo, hi = (0.05, 0.95) if name != "edm" else (0.1, 10.0)
    t = torch.linspace(lo, hi, 7, dtype=torch.float64)
    if name.startswith("ddpm"):  # away from the grid kinks
        t = (torch.floor(t * 1000) + 0.5) / 1000
    h = 1e-6 * (1 if name != "edm" else 10)
    num_da = (p.alpha(t + h) - p.alpha(t - h)) / (2 * h)
    num_ds = (p.sigma(t + h) - p.sigma(t - h)) / (2 * h)
    assert torch.allclose(p.d_alpha(t), num_da, rtol=1e-4, atol=1e-7)
    assert torch.allclose(p.d_sigma(t), num_ds, rtol=1e-4, atol=1e-7)
    if name in ("linear", "trig"):
        return
    c = p.coefficients(t)
    v0 = 0.7
    var = lambda s: p.alpha(s) ** 2 * v0 + p.sigma(s) ** 2  # noqa: E731
    dvar = (var(t + h) - var(t - h)) / (2 * h)
    assert torch.allclose(dvar, 2 * c.f * var(t) + c.g2, rtol=1e-4)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_empirical_marginal(name: str) -> None:
    """x_t = alpha x0 + sigma eps has the mean/std of the closed form (checked on samples)."""
    p = PROCESSES[name]
    g = Euclidean()
    x0 = torch.full((20000, 1), 1.5)
    t = torch.full((20000,), 0.3 if name != "edm" else 1.3)
    xt = p.marginal(x0, t, g.randn_like(x0), g)
    tt = t[:1].double()
    assert float(xt.mean()) == pytest.approx(1.5 * float(p.alpha(tt)), abs=0.03 * max(1, float(p.sigma(tt))))
    assert float(xt.std()) == pytest.approx(float(p.sigma(tt)), rel=0.03)


def test_joint_process_per_key() -> None:
    jp = JointProcess({"x": VP(0.1, 1.0), "adj": VE(0.2, 1.0)})
    t = torch.tensor([0.5])
    c = jp.coefficients(t)
    assert torch.allclose(c.alpha["x"], VP(0.1, 1.0).alpha(t)) and torch.allclose(c.sigma["adj"], VE(0.2, 1.0).sigma(t))
    # VP's prior is its stationary N(0, I) even when beta_max is small (Song et al.; GDSS)
    assert jp.prior_std() == {"x": 1.0, "adj": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="time range"):
        JointProcess(x=VP(t_eps=1e-3), adj=VE())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        VP(beta_min=-1.0)
    with pytest.raises(ValueError):
        VE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError):
        DiscreteDDPM(10).time_grid(50)
    with pytest.raises(ValueError, match="schedule"):
        make_betas("quadratic", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["vp", "ve", "edm", "linear", "trig"])
def test_logsnr_grid_is_uniform_in_lambda(name: str) -> None:
    p = PROCESSES[name]
    g = p.time_grid(12, spacing="logsnr").double()
    assert len(g) == 13 and float(g[0]) == pytest.approx(p.t_max, rel=1e-6) and float(g[-1]) == pytest.approx(p.t_end, rel=1e-5)
    assert (g[1:] < g[:-1]).all()
    lam = p.coefficients(g).log_snr
    inner = lam[1:] if name in ("linear", "trig") else lam  # t_max itself has lambda = -inf there
    d = inner[1:] - inner[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-3)


def test_quadratic_and_bad_spacing() -> None:
    g = VP().time_grid(4, spacing="quadratic").double()
    assert torch.allclose(g.sqrt(), torch.linspace(1.0, 1e-3**0.5, 5, dtype=torch.float64), atol=1e-6)
    with pytest.raises(ValueError, match="spacing"):
        VP().time_grid(4, spacing="cosine")
    d = DiscreteDDPM(100).time_grid(10, spacing="quadratic")
    assert float(d[0]) == 1.0 and float(d[-1]) == pytest.approx(0.01)

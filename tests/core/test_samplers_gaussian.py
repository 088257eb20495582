"""Every sampler on every process where it is defined recovers the mean and covariance of
Gaussian data from its exact (analytic) denoiser; and runs on structured, masked States."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean, Masked, Product
from workbench.precond import Prediction
from workbench.processes import EDM, VE, VP, DiscreteDDPM, JointProcess, LinearInterpolant, SubVP, TrigInterpolant

from workbench.samplers import NFECounter, sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc, sample_s4
from workbench.testing import GaussianDenoiser

PROCESSES = {
    "vp": VP(), "subvp": SubVP(), "ve": VE(0.01, 50.0), "edm": EDM(), "linear": LinearInterpolant(),
    "trig": TrigInterpolant(), "ddpm": DiscreteDDPM(1000), "ddpm_cosine": DiscreteDDPM(1000, "cosine"),
}
# (function, kwargs, steps, stochastic?)
SAMPLERS = {
    "euler_maruyama": (sample_euler_maruyama, {}, 500, True),
    "pc": (sample_pc, {"snr": 0.05}, 300, True),
    "pc_ancestral_gdss_order": (sample_pc, {"snr": 0.05, "predictor": "ancestral", "corrector_first": True}, 300, True),
    "pc_euler_no_corrector": (sample_pc, {"predictor": "euler_maruyama", "corrector": "none"}, 500, True),
    "s4": (sample_s4, {"snr": 0.05, "denoise": True}, 300, True),
    "ode_euler": (sample_ode, {"method": "euler"}, 1000, False),
    "ode_heun": (sample_ode, {"method": "heun"}, 60, False),
    "ddim": (sample_ddim, {}, 100, False),
    "ddpm_ancestral": (sample_ddim, {"eta": 1.0}, 300, False),
    "dpm_solver": (sample_dpm_solver, {}, 50, False),
}


@pytest.mark.parametrize("sname", list(SAMPLERS))
@pytest.mark.parametrize("pname", list(PROCESSES))
def test_sampler_recovers_gaussian(pname: str, sname: str, gaussian2d) -> None:
    process = PROCESSES[pname]
    fn, kwargs, steps, needs_sde = SAMPLERS[sname]
    mean, cov = gaussian2d
    model = NFECounter(GaussianDenoiser(process, mean, cov))
    g = torch.Generator().manual_seed(0)
    x = process.prior_sample(torch.zeros(4000, 2), Euclidean(), generator=g)
    if isinstance(process, DiscreteDDPM):
        steps = min(steps, process.steps - 1)
    if needs_sde and not process.stochastic:
        with pytest.raises(ValueError, match="not defined"):
            fn(model, x, process.time_grid(4), process=process, geometry=Euclidean())
        return
    out = fn(model, x, process.time_grid(steps), process=process, geometry=Euclidean(), generator=g, **kwargs)
    assert torch.isfinite(out).all()
    assert (out.mean(0) - mean).abs().max() < 0.08, out.mean(0)
    assert (torch.cov(out.T) - cov).abs().max() < 0.12, torch.cov(out.T)
    per_step = 2 if sname in ("ode_heun", "pc", "pc_ancestral_gdss_order") else 1
    assert model.nfe == steps * per_step + 1


class _DictGaussian(nn.Module):
    """Exact denoiser of independent Gaussian variables of a dict state under a JointProcess."""

    def __init__(self, process: JointProcess, params: dict) -> None:
        super().__init__()
        self.process = process
        self.parts = {k: GaussianDenoiser(process.processes[k], m, c) for k, (m, c) in params.items()}

    def forward(self, x, t, geometry, **extras) -> Prediction:
        t = self.process._batch_t(t, x)
        preds = {k: d(x[k].flatten(1), t, Euclidean()) for k, d in self.parts.items()}
        x0 = {k: p.x0.reshape(x[k].shape) * geometry.part(k)._mask(x[k]) if geometry.part(k).mask is not None
              else p.x0.reshape(x[k].shape) for k, p in preds.items()}
        eps = {k: p.eps.reshape(x[k].shape) for k, p in preds.items()}
        return Prediction(x0, eps, self.process.at(t, x, geometry))


@pytest.mark.parametrize("sname", list(SAMPLERS))
def test_structured_masked_state(sname: str) -> None:
    """A system {a: [B, 2], b: [B, 3] with the last entry padded} under VP x VE with a shared t."""
    fn, kwargs, steps, _ = SAMPLERS[sname]
    jp = JointProcess(a=VP(0.1, 20.0), b=VE(0.01, 50.0))
    ma, ca = torch.tensor([0.5, -1.0]), torch.tensor([[0.5, 0.2], [0.2, 0.3]])
    mb, cb = torch.tensor([2.0, 0.0, 0.0]), torch.diag(torch.tensor([0.2, 0.6, 1.0]))
    model = _DictGaussian(jp, {"a": (ma, ca), "b": (mb, cb)})
    mask_b = torch.tensor([1.0, 1.0, 0.0]).expand(3000, 3)
    geom = Product(a=Euclidean(), b=Masked()).bind({"a": None, "b": mask_b})
    template = {"a": torch.zeros(3000, 2), "b": torch.zeros(3000, 3)}
    g = torch.Generator().manual_seed(1)
    x = jp.prior_sample(template, geom, generator=g)
    out = fn(model, x, jp.time_grid(steps), process=jp, geometry=geom, generator=g, **kwargs)
    assert set(out) == {"a", "b"}
    assert (out["b"][:, 2] == 0).all(), "padded entries must stay zero"
    assert (out["a"].mean(0) - ma).abs().max() < 0.08
    assert (torch.cov(out["a"].T) - ca).abs().max() < 0.08
    assert (out["b"][:, :2].mean(0) - mb[:2]).abs().max() < 0.08
    assert (out["b"][:, :2].var(0) - cb.diagonal()[:2]).abs().max() < 0.08


def test_callback_and_progress(capsys) -> None:
    p = VP()
    model = GaussianDenoiser(p, torch.zeros(2), torch.eye(2))
    seen = []
    sample_ode(model, torch.randn(4, 2), p.time_grid(5), process=p, geometry=Euclidean(),
               callback=lambda **kw: seen.append(float(kw["t"])))
    assert len(seen) == 5 and seen[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        sample_ode(model, torch.randn(4, 2), p.time_grid(5), process=p, geometry=Euclidean(), method="rk9")



"""Issue 10, defects 1 and 2: points vs tangent vectors on a torus, and joint processes that use
each variable's own coefficients. Each test names the bug it guards against."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean, Periodic, Product
from workbench.guidance import energy_grad
from workbench.likelihood import log_likelihood
from workbench.losses import DenoisingScoreMatching
from workbench.precond import Denoiser, Prediction
from workbench.processes import EDM, VE, VP, DiscreteDDPM, JointProcess
from workbench.samplers import sample_ddim, sample_dpm_solver


class _LinearField(nn.Module):
    """A model whose PF-ODE velocity is diag(a) x (divergence sum(a), known exactly)."""

    def __init__(self, process, a: torch.Tensor) -> None:
        super().__init__()
        self.process, self.a = process, a

    def forward(self, x, t, geometry, **_):
        c = self.process.at(t, x, geometry)
        v = x * self.a
        # any (x0, eps) whose velocity is v: choose eps = 0 => x0 = v / alpha'
        x0 = v / c.d_alpha
        return Prediction(x0, torch.zeros_like(x), c)


def test_hutchinson_on_a_torus_equals_the_exact_divergence() -> None:
    # bug: Rademacher probes +-1 projected as points are wrapped to 0 -> divergence 0
    process = VP()
    a = torch.tensor([0.3, -1.2, 0.7])
    model = _LinearField(process, a)
    x = torch.rand(5, 3)
    kw = dict(process=process, geometry=Periodic(1.0), steps=4)
    exact = log_likelihood(model, x, estimator="exact", **kw)
    hutch = log_likelihood(model, x, estimator="hutchinson", generator=torch.Generator().manual_seed(0), **kw)
    # diagonal Jacobian: z^T J z = trace J for every Rademacher z
    assert torch.allclose(hutch.delta_logp, exact.delta_logp, atol=1e-5)
    assert exact.delta_logp.abs().min() > 0.1


class _Identity(nn.Module):
    def __init__(self, process) -> None:
        super().__init__()
        self.process = process

    def forward(self, x, t, geometry, **_):
        c = self.process.at(t, x, geometry)
        return Prediction(x * 1.0, torch.zeros_like(x), c)


def test_guidance_gradient_on_a_torus_keeps_sign_and_size() -> None:
    # bug: the gradient was projected as a point, so -3.56 came back as +0.44
    y = torch.tensor([[2.0, 0.1]])
    x = torch.tensor([[0.22, 0.3]])
    grad, _ = energy_grad(_Identity(VE()), x, torch.tensor(0.5), Periodic(1.0),
                          lambda x0: ((x0 - y) ** 2).sum(1))
    assert torch.allclose(grad, 2 * (x - y)), grad
    assert grad[0, 0] < -3.5


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen = []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, **_):
        self.seen.append(x.detach().clone())
        return x * self.w


def test_training_x_t_is_wrapped_like_the_samplers_states() -> None:
    # bug: the loss fed the network an unwrapped x_t (values far outside [0, 1)) while every
    # sampler wraps its state after each step
    process = VE(0.01, 5.0)
    net = _Recorder()
    d = Denoiser(net, process, prediction="eps")
    x0 = torch.rand(64, 3)
    t = torch.full((64,), 0.9)
    noise = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    DenoisingScoreMatching()(d, x0, geometry=Periodic(1.0), t=t, noise=noise)
    seen = net.seen[0]
    sigma = process.sigma(t)[:, None]
    assert torch.allclose(seen, torch.remainder(x0 + sigma * noise, 1.0), atol=1e-6)
    # the samplers' states live in the same box
    g = Periodic(1.0)
    ts = process.time_grid(5)
    xs = sample_ddim(Denoiser(_Recorder(), process), process.prior_sample(x0, g), ts, process=process,
                     geometry=g, denoise=False)
    assert (xs >= 0).all() and (xs < 1).all() and (seen >= 0).all() and (seen < 1).all()


# -- joint processes ------------------------------------------------------------------------------
class _PerKey(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({"x": nn.Linear(4, 4), "adj": nn.Linear(5, 5)})

    def forward(self, x, t, **_):
        return {k: self.nets[k](v) + t[:, None, None] for k, v in x.items()}


class _OneKey(nn.Module):
    def __init__(self, shared: _PerKey, key: str) -> None:
        super().__init__()
        self.shared, self.key = shared, key

    def forward(self, x, t, **_):
        return self.shared.nets[self.key](x) + t[:, None, None]


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "min_snr"])
def test_joint_loss_weights_each_variable_by_its_own_process(weighting: str) -> None:
    # bug: the adj loss of a VP x + VE adj system was weighted by VP's sigma^2 (first variable)
    torch.manual_seed(0)
    vp, ve = VP(0.1, 1.0), VE(0.2, 1.0)
    net = _PerKey()
    joint = Denoiser(net, JointProcess(x=vp, adj=ve), prediction={"x": "eps", "adj": "score"})
    x0 = {"x": torch.randn(6, 5, 4), "adj": torch.randn(6, 5, 5)}
    noise = {"x": torch.randn(6, 5, 4), "adj": torch.randn(6, 5, 5)}
    t = torch.rand(6) * 0.9 + 0.05
    geo = Product(x=Euclidean(), adj=Euclidean())
    loss = DenoisingScoreMatching(weighting=weighting, space="eps")
    out = loss(joint, x0, geometry=geo, t=t, noise=noise)
    for key, proc, kind in (("x", vp, "eps"), ("adj", ve, "score")):
        alone = Denoiser(_OneKey(net, key), proc, prediction=kind)
        ref = loss(alone, x0[key], geometry=Euclidean(), t=t, noise=noise[key])
        assert torch.allclose(out.parts[key], ref.loss, rtol=1e-5), key


def test_joint_sampling_matches_separate_processes() -> None:
    # each variable must be integrated with its own coefficients (a deterministic sampler on a
    # factorised model gives per variable what the separate process gives)
    torch.manual_seed(0)
    vp, ve = VP(0.1, 1.0), VE(0.2, 1.0)
    net = _PerKey()
    joint_proc = JointProcess(x=vp, adj=ve)
    joint = Denoiser(net, joint_proc, prediction={"x": "eps", "adj": "score"})
    x = {"x": torch.randn(3, 5, 4), "adj": torch.randn(3, 5, 5)}
    geo = Product(x=Euclidean(), adj=Euclidean())
    with torch.no_grad():
        ts = joint_proc.time_grid(6)
        out = sample_dpm_solver(joint, x, ts, process=joint_proc, geometry=geo)
        for key, proc, kind in (("x", vp, "eps"), ("adj", ve, "score")):
            alone = Denoiser(_OneKey(net, key), proc, prediction=kind)
            ref = sample_dpm_solver(alone, x[key], ts, process=proc, geometry=Euclidean())
            assert torch.allclose(out[key], ref, atol=1e-5), key


def test_joint_process_refuses_what_one_shared_value_cannot_express() -> None:
    # bug: the log-SNR grid of a VP x + VE adj system silently followed VP's curve
    mixed = JointProcess(x=VP(0.1, 1.0), adj=VE(0.2, 1.0))
    with pytest.raises(ValueError, match="different ones"):
        mixed.time_grid(10, spacing="logsnr")
    assert len(mixed.time_grid(10)) == 11
    same = JointProcess(x=VP(), adj=VP())
    assert torch.allclose(same.time_grid(10, spacing="logsnr"), VP().time_grid(10, spacing="logsnr"))
    with pytest.raises(ValueError, match="JointProcess: processes"):
        JointProcess(x=VP(t_eps=1e-3, t_end=1e-3), adj=DiscreteDDPM(1000))
    with pytest.raises(ValueError, match="one noise level"):
        Denoiser(_PerKey(), mixed, prediction="edm")
    Denoiser(_PerKey(), JointProcess(x=EDM(), adj=EDM()), prediction="edm")  # shared: fine

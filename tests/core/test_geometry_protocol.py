"""Issue 10, defect 3: the geometry protocol is all the core needs. A third-party geometry that
implements only GeometryProtocol's public methods (it does not derive from Geometry) runs the
loss, every sampler and the likelihood, and gives what the built-in Periodic gives."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from workbench.geometry import GeometryProtocol, Periodic
from workbench.likelihood import log_likelihood
from workbench.lit import DiffusionModule
from workbench.losses import DenoisingScoreMatching
from workbench.precond import Denoiser
from workbench.processes import VP
from workbench.samplers import sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc, sample_s4


class Torus:
    """A user's own torus [0, 1)^d with a per-row existence mask, written from the protocol alone."""

    def __init__(self, mask=None):
        self.mask = mask

    def bind(self, mask):
        g = copy.copy(self)
        g.mask = mask
        return g

    def part(self, key):
        return self

    def _m(self, x):
        return torch.ones_like(x) if self.mask is None else self.mask[:, :, None].to(x.dtype).expand_as(x)

    def randn_like(self, x, generator=None):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype) * self._m(x)

    def project(self, x):
        return torch.remainder(x, 1.0) * self._m(x)

    def project_tangent(self, v):
        return v * self._m(v)

    def expand(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return t.reshape(-1, *([1] * (x.ndim - 1)))

    def reduce(self, err, reduction="mean"):
        total = (err * self._m(err)).flatten(1).sum(1)
        return total if reduction == "sum" else total / self.dims(err)

    def dims(self, x):
        return self._m(x).flatten(1).sum(1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x, t, **_):
        return self.lin(x) * t[:, None, None]


SAMPLERS = {"euler_maruyama": sample_euler_maruyama, "pc": sample_pc, "ode": sample_ode, "ddim": sample_ddim,
            "dpm_solver": sample_dpm_solver, "s4": sample_s4}


def _mask() -> torch.Tensor:
    m = torch.ones(4, 5)
    m[1, 3:] = 0
    m[3, 1:] = 0
    return m


def test_the_user_geometry_satisfies_the_protocol() -> None:
    assert isinstance(Torus(), GeometryProtocol) and isinstance(Periodic(), GeometryProtocol)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_on_a_protocol_only_geometry(name: str) -> None:
    torch.manual_seed(0)
    d = Denoiser(_Net(), VP(), prediction="eps")
    ours, theirs = Torus().bind(_mask()), Periodic(1.0).bind(_mask())
    outs = []
    for geo in (ours, theirs):
        g = torch.Generator().manual_seed(1)
        x = VP().prior_sample(torch.zeros(4, 5, 3), geo, generator=g)
        outs.append(SAMPLERS[name](d, x, VP().time_grid(6), process=VP(), geometry=geo, generator=g, denoise=False))
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert (outs[0][1, 3:] == 0).all() and (outs[0] >= 0).all() and (outs[0] < 1).all()


def test_loss_likelihood_and_module_on_a_protocol_only_geometry() -> None:
    torch.manual_seed(0)
    net = _Net()
    ours, theirs = Torus().bind(_mask()), Periodic(1.0).bind(_mask())
    x0 = torch.rand(4, 5, 3)
    d = Denoiser(net, VP(), prediction="eps")
    losses = [DenoisingScoreMatching(weighting="sigma2")(d, x0, geometry=g, generator=torch.Generator().manual_seed(2))
              for g in (ours, theirs)]
    assert torch.allclose(losses[0].loss, losses[1].loss)
    lls = [log_likelihood(d, x0, process=VP(), geometry=g, steps=3, generator=torch.Generator().manual_seed(3))
           for g in (ours, theirs)]
    assert torch.allclose(lls[0].logp, lls[1].logp, atol=1e-4) and torch.allclose(lls[0].bpd, lls[1].bpd, atol=1e-6)
    module = DiffusionModule(network=net, process=VP(), geometry=Torus(), loss=DenoisingScoreMatching(weighting="sigma2"))
    out = module._loss({"x": x0, "mask": _mask()}, torch.Generator().manual_seed(2))
    assert torch.allclose(out.loss, losses[0].loss)
    s = module.sample({"x": torch.zeros(4, 5, 3), "mask": _mask()}, sampler=sample_ddim, steps=3)
    assert (s[3, 1:] == 0).all()

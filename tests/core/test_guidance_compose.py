"""Issue 10, defects 4 and 5: guidance wrappers stack (every ordered pair, under two samplers),
and observation masks on 5-D volumes follow the one mask rule."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from workbench.geometry import Euclidean, Masked, align_mask
from workbench.guidance import DPS, ClassifierFreeGuidance, Replacement, SelfGuidance
from workbench.precond import Denoiser
from workbench.processes import VP
from workbench.samplers import sample_ddim, sample_euler_maruyama
from workbench.testing import GaussianDenoiser

P = VP()
MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.61]])
N = 64
Y = torch.tensor([2.0, 0.0]).expand(N, 2)


class _CondGaussian(nn.Module):
    """Exact Gaussian denoiser whose mean moves with ``cond`` (None: unconditional)."""

    def __init__(self) -> None:
        super().__init__()
        self.process = P
        self.unc = GaussianDenoiser(P, MEAN, COV)
        self.con = GaussianDenoiser(P, MEAN + torch.tensor([0.0, 1.5]), COV)

    def forward(self, x, t, geometry, cond=None, **extras):
        return self.unc(x, t, geometry) if cond is None else self.con(x, t, geometry)


def _wrap(name: str, inner: nn.Module, active: bool) -> nn.Module:
    if name == "cfg":
        return ClassifierFreeGuidance(inner, 2.0 if active else 0.0)
    if name == "replacement":
        m = torch.tensor([1.0, 0.0]) if active else torch.zeros(2)
        return Replacement(inner, Y, m.expand(N, 2), generator=torch.Generator().manual_seed(5))
    if name == "dps":
        return DPS(inner, lambda x0: x0[:, 1:], torch.full((N, 1), 0.5), zeta=3.0 if active else 0.0, squared=True)
    if name == "self":
        return SelfGuidance(inner, lambda x0: ((x0[:, 1] - 0.5) ** 2), scale=2.0 if active else 0.0)
    raise KeyError(name)


NAMES = ["cfg", "replacement", "dps", "self"]
SAMPLERS = {"ddim": sample_ddim, "euler_maruyama": sample_euler_maruyama}


def _run(model: nn.Module, sampler: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = P.prior_sample(torch.zeros(N, 2), Euclidean(), generator=g)
    return SAMPLERS[sampler](model, x, P.time_grid(12), process=P, geometry=Euclidean(), generator=g,
                             extra_args={"cond": torch.ones(N)})


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("outer,inner", list(itertools.permutations(NAMES, 2)))
def test_every_pair_of_wrappers_stacks(outer: str, inner: str, sampler: str) -> None:
    # bug: only CFG forwarded `process`, so Replacement(SelfGuidance(...)) raised AttributeError;
    # gradient wrappers detached their input, so an outer gradient could not pass an inner one
    both = _wrap(outer, _wrap(inner, _CondGaussian(), True), True)
    assert both.process is P and both.base.__class__ is _CondGaussian
    out = _run(both, sampler)
    assert torch.isfinite(out).all()
    if outer == "replacement":
        assert torch.allclose(out[:, 0], Y[:, 0], atol=1e-5)
    # a wrapper at zero strength is the identity, inside or outside another one
    alone = _run(_wrap(outer, _CondGaussian(), True), sampler)
    zero_inside = _run(_wrap(outer, _wrap(inner, _CondGaussian(), False), True), sampler)
    assert torch.allclose(zero_inside, alone, atol=1e-4), (zero_inside - alone).abs().max()
    zero_outside = _run(_wrap(inner, _wrap(outer, _CondGaussian(), True), False), sampler)
    assert torch.allclose(zero_outside, alone, atol=1e-4), (zero_outside - alone).abs().max()
    # both active differ from the outer alone (the inner one acts)
    assert (out - alone).abs().max() > 1e-2


def test_an_outer_gradient_passes_through_an_inner_guidance_term() -> None:
    # SelfGuidance(SelfGuidance(D, E1), E2): the outer gradient is d E2(x0'(x)) / dx where x0'
    # is the inner *guided* estimate, so it must depend on the inner term's strength
    x = torch.randn(N, 2)
    t = torch.tensor(0.5)
    e2 = lambda x0: (x0[:, 0] - 1.0) ** 2  # noqa: E731
    grads = []
    for s1 in (0.0, 4.0):
        inner = SelfGuidance(_CondGaussian(), lambda x0: (x0[:, 0] * x0[:, 1]) ** 2, scale=s1)
        outer = SelfGuidance(inner, e2, scale=1.0)
        p_in = inner(x, t, Euclidean())
        p_out = outer(x, t, Euclidean())
        grads.append((p_out.eps - p_in.eps) / p_in.coef.sigma)  # = scale * grad E2
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            ref = torch.autograd.grad(e2(inner(xg, t, Euclidean()).x0).sum(), xg)[0]
        assert torch.allclose(grads[-1], ref, atol=1e-4)
    assert (grads[0] - grads[1]).abs().max() > 1e-2


# -- the mask rule on volumes -----------------------------------------------------------------------
class _Scale(nn.Module):
    def forward(self, v, t, **_):
        return v * 0.3


def _volume_masks():
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(2, 3, 4, 5, generator=g) > 0.4).float()        # [B, D, H, W]
    full = m[:, None].expand(2, 3, 3, 4, 5).contiguous()            # [B, C, D, H, W]
    return m, m[:, None], full


@pytest.mark.parametrize("form", ["BDHW", "B1DHW"])
def test_existence_mask_on_a_volume(form: str) -> None:
    # bug: masks were aligned only as a prefix of the state dims, so a channel-less [B, D, H, W]
    # mask did not fit a [B, C, D, H, W] volume
    m, m1, full = _volume_masks()
    mask = m if form == "BDHW" else m1
    x = torch.zeros(2, 3, 3, 4, 5)
    g, ref = Masked().bind(mask), Masked().bind(full)
    z = g.randn_like(x, generator=torch.Generator().manual_seed(1))
    zr = ref.randn_like(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z, zr) and (z[full == 0] == 0).all() and (z[full == 1] != 0).all()
    err = torch.rand(2, 3, 3, 4, 5)
    assert torch.allclose(g.reduce(err), ref.reduce(err)) and torch.allclose(g.dims(x), full.flatten(1).sum(1))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4, 4\) does not fit"):
        Masked().bind(m[:, :, :, :4].sum(1)).randn_like(x)


@pytest.mark.parametrize("form", ["BDHW", "B1DHW"])
def test_observation_mask_on_a_volume(form: str) -> None:
    # bug: Replacement broadcast its mask from the last dimension, so [B, D, H, W] met C where
    # it should meet D (and failed or silently misaligned)
    m, m1, full = _volume_masks()
    mask = m if form == "BDHW" else m1
    y = torch.randn(2, 3, 3, 4, 5)
    x = torch.randn(2, 3, 3, 4, 5)
    d = Denoiser(_Scale(), VP(), prediction="eps")
    a = Replacement(d, y, mask, generator=torch.Generator().manual_seed(2))(x, 0.4, Euclidean())
    b = Replacement(d, y, full, generator=torch.Generator().manual_seed(2))(x, 0.4, Euclidean())
    assert torch.allclose(a.x0, b.x0) and torch.allclose(a.eps, b.eps)
    assert torch.allclose(a.x0[full == 1], y[full == 1])


def test_align_mask_rule() -> None:
    x = torch.zeros(4, 6, 6, 2)                                        # [B, N, N, C]
    assert align_mask(torch.ones(4, 6), x).shape == (4, 6, 1, 1)       # prefix wins
    assert align_mask(torch.ones(4, 6, 2), x).shape == (4, 1, 6, 2)    # trailing
    assert align_mask(torch.ones(4, 1, 6, 1), x).shape == (4, 1, 6, 1)  # same ndim, size-1 dims
    with pytest.raises(ValueError, match="does not fit"):
        align_mask(torch.ones(4, 5), x)

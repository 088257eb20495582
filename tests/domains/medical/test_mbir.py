"""DiffusionMBIR (domains/medical/mbir.py) and its slice prior (networks.py).

The prior is exact: a Gaussian on 16x16 slices (smooth squared-exponential covariance), its
posterior mean computed in the covariance's eigenbasis (``SliceGaussian``), under a VE process. The volume [8, 1, 16, 16] is a batch of 8 slices; the operator is the core's
``FourierSubsample`` with a different Cartesian mask per slice (under-determined), or a
``Mask``. Each test names the bug it guards.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from workbench import conditional
from workbench.errors import ConfigError
from workbench.geometry import Euclidean
from workbench.operators import FourierSubsample, Mask, cartesian_mask, check_adjoint
from workbench.precond import Denoiser
from workbench.processes import VE
from workbench.samplers import sample_ddim, sample_dpm_solver, sample_ode, sample_pc
from workbench.samplers.common import sampler_grid
from workbench.precond import Prediction

from workbench.domains.medical.mbir import (MRI_DEFAULTS, ADMMTVz, DiffusionMBIRGuidance, SliceDifference,
                                            StackedDifference, admm_tv_3d, data_residual, zero_filled)
from workbench.domains.medical.networks import SlicePrior

Z, H = 8, 16
MRI = dict(lamb=MRI_DEFAULTS["lamb"], rho=MRI_DEFAULTS["rho"])   # A = orthonormal FFT: ||A^T A|| = 1


def _prior(dtype=torch.float64):
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    pts = torch.stack([ii.flatten(), jj.flatten()], 1).double()
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    cov = 0.05 * torch.exp(-d2 / (2 * 3.0 ** 2)) + 1e-4 * torch.eye(H * H, dtype=torch.float64)
    return 0.5 * torch.ones(H * H, dtype=torch.float64), cov


MEAN, COV = _prior()
PROCESS = VE(sigma_min=0.01, sigma_max=10.0)


class SliceGaussian(nn.Module):
    """Exact E[x0 | x_t] for slices x0 ~ N(MEAN, COV) under the VE process (alpha = 1):
    x0 = mu + V diag(w / (w + sigma^2)) V^T (x_t - mu), COV = V diag(w) V^T, one sigma per slice.
    (workbench.testing.GaussianDenoiser is the same map for any schedule; with one sigma per slice
    the eigenbasis form needs no per-call factorisation of 256x256 systems.)"""

    def __init__(self, process=PROCESS, mean=MEAN, cov=COV) -> None:
        super().__init__()
        self.process = process
        w, v = torch.linalg.eigh(cov)
        self.register_buffer("mean", mean)
        self.register_buffer("w", w)
        self.register_buffer("v", v)

    def forward(self, x, t, geometry, **extras) -> Prediction:
        t = self.process._batch_t(t, x)
        coef = self.process.at(t, x, geometry)
        s2 = coef.sigma.double().flatten(1)[:, :1] ** 2                       # [B, 1]
        r = x.double().flatten(1) - self.mean
        x0 = self.mean + ((r @ self.v) * (self.w / (self.w + s2))) @ self.v.T
        return Prediction.from_eps(x, ((x.double().flatten(1) - x0) / s2.sqrt()).reshape(x.shape).to(x.dtype), coef)


def _truth(dtype=torch.float32) -> torch.Tensor:
    """One prior draw, repeated along z (a volume constant along the slice axis)."""
    g = torch.Generator().manual_seed(1)
    s = MEAN + torch.linalg.cholesky(COV) @ torch.randn(H * H, generator=g, dtype=torch.float64)
    return s.to(dtype).reshape(1, 1, H, H).expand(Z, 1, H, H).clone()


def _fourier(dtype=torch.float32, z: int = Z, h: int = H) -> FourierSubsample:
    masks = torch.stack([cartesian_mask((h, h), 4.0, 0.125, seed=k) for k in range(z)])[:, None]
    return FourierSubsample(masks.to(dtype))


def _rmse(a, b) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------------ D_z
def test_periodic_slice_difference_and_adjoint() -> None:
    """Bug: a D_z without the wrap (the reference's (D_z x)_{Z-1} = x_0 - x_{Z-1}) or an adjoint
    that is not D_z^T (CG then solves a non-symmetric system)."""
    d = SliceDifference(0)
    x = torch.arange(4.0).reshape(4, 1, 1, 1) ** 2            # 0, 1, 4, 9
    assert d.forward(x).flatten().tolist() == [1.0, 3.0, 5.0, -9.0]
    for periodic in (True, False):
        op = SliceDifference(0, periodic)

        class _Wrap:   # check_adjoint's x has a batch dim in front; the slice axis is then 1
            def forward(self, v):
                return torch.stack([op.forward(u) for u in v])

            def adjoint(self, w):
                return torch.stack([op.adjoint(u) for u in w])

        assert check_adjoint(_Wrap(), (2, Z, 1, 3, 3)) < 1e-14


# ------------------------------------------------------------------------- (a) one ADMM step
def _dense(hook: ADMMTVz, shape) -> torch.Tensor:
    n = torch.Size(shape).numel()
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([hook.normal(eye[i].reshape(shape)).flatten() for i in range(n)], 1)


def test_one_admm_step_is_the_closed_form_of_its_subproblems() -> None:
    """Bug: the x-update not solving (A^T A + rho D^T D) x = A^T y + rho D^T (del - u) (wrong
    sign of the split term, D instead of D^T, a missing rho), CG inner products per slice
    instead of over the volume, or a wrong shrinkage threshold (lamb instead of lamb / rho)."""
    op = _fourier(torch.float64, z=4, h=8)      # a dense 256 x 256 system
    g = torch.Generator().manual_seed(3)
    truth = 0.5 + 0.1 * torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64).expand(4, 1, 8, 8)
    y = op.forward(truth)
    x0 = truth + 0.3 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    del0 = 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    u0 = 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    lamb, rho = 0.02, 0.5

    def primed(n_cg):
        h = ADMMTVz(op, y, lamb=lamb, rho=rho, n_cg=n_cg, cg_tol=1e-14)
        h.del_z, h.u_z, h._last_t = del0.clone(), u0.clone(), 1.0   # a state carried from a previous step
        return h

    D = SliceDifference(0)
    b = op.adjoint(y) + rho * D.adjoint(del0 - u0)
    h = primed(400)
    M = _dense(h, truth.shape)
    w, V = torch.linalg.eigh(M)
    inv = torch.where(w > 1e-10 * w.max(), 1 / w, torch.zeros_like(w))
    r0 = (b - h.normal(x0)).flatten()
    # CG from x0 stays in x0 + range(M): the solution nearest x0 (M may be singular)
    x_star = x0 + (V @ (inv * (V.T @ r0))).reshape(truth.shape)
    x = h(x0, 0.5)
    assert _rmse(x, x_star) < 1e-9 * (1 + _rmse(x_star, 0 * x_star))
    assert _rmse(h.normal(x), b) < 1e-8
    # shrinkage and dual update, exact given x
    v = D.forward(x) + u0
    thr = lamb / rho
    soft = torch.where(v.abs() > thr, v - thr * torch.sign(v), torch.zeros_like(v))
    assert torch.equal(h.del_z, soft)
    assert torch.allclose(h.u_z, u0 + D.forward(x) - soft, atol=1e-15, rtol=0)
    assert int((h.del_z == 0).sum()) > 0       # the threshold is active somewhere
    # ONE CG iteration (the paper's n_cg = 1): x0 + (r.r / r.Mr) r with inner products over the volume
    r = b - h.normal(x0)
    x1 = x0 + (r * r).sum() / (r * h.normal(r)).sum() * r
    assert _rmse(primed(1)(x0, 0.5), x1) < 1e-12


@pytest.mark.parametrize("periodic", [True, False])
def test_all_axes_tv_difference_is_stacked_and_its_adjoint_exact(periodic) -> None:
    """Bug: the all-axes variant's D^T summing only the z part, a wrong roll direction along h / w,
    or the Neumann parts not padded back to x's shape (then no stack)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, 1, 5, 6, generator=g, dtype=torch.float64)
    d = StackedDifference((0, -2, -1), periodic)
    dx = d.forward(x)
    assert dx.shape == (3, 4, 1, 5, 6)
    if periodic:   # (D_h x)[.., i, :] = x[.., i+1, :] - x[.., i, :], wrapping
        assert torch.equal(dx[1, :, :, :-1], x[:, :, 1:] - x[:, :, :-1])
        assert torch.equal(dx[1, :, :, -1], x[:, :, 0] - x[:, :, -1])
        assert torch.equal(dx[2, ..., -1], x[..., 0] - x[..., -1])
    else:
        assert torch.equal(dx[2, ..., :-1], x[..., 1:] - x[..., :-1]) and not dx[2, ..., -1].any()
    assert abs(float((dx * w).sum() - (x * d.adjoint(w)).sum())) < 1e-12


def test_all_axes_admm_step_regularises_in_plane_too() -> None:
    """Bug: ``tv_axes="zhw"`` silently running the z-only step (a volume constant along z but
    varying in plane has D_z x = 0, so only the all-axes normal operator sees its TV term), or its
    x-update using another operator than A^T A + rho (D_z^T D_z + D_h^T D_h + D_w^T D_w)."""
    op = _fourier(torch.float64, z=4, h=8)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64).expand(4, 1, 8, 8).clone()
    y = op.forward(x)
    rho = 0.7
    z_only, all_axes = (ADMMTVz(op, y, rho=rho, tv_axes=a) for a in ("z", "zhw"))
    ata = op.adjoint(op.forward(x))
    assert torch.allclose(z_only.normal(x), ata, atol=1e-12)
    lap = sum(torch.roll(x, 1, a) - 2 * x + torch.roll(x, -1, a) for a in (0, 2, 3))   # -D^T D x, periodic
    assert torch.allclose(all_axes.normal(x), ata - rho * lap, atol=1e-12)
    all_axes(x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64), 0.5)
    assert all_axes.del_z.shape == (3, 4, 1, 8, 8) and all_axes.u_z.shape == (3, 4, 1, 8, 8)
    with pytest.raises(ConfigError, match="tv_axes"):
        DiffusionMBIRGuidance(tv_axes="zq")


# -------------------------------------------------------------------------- (b) persistence
def test_split_and_dual_persist_across_steps_and_reset_per_volume_and_run() -> None:
    """Bug: del_z / u_z re-zeroed at every diffusion step (the reference keeps them for the
    whole run), or carried over to the next volume or the next posterior sample."""
    op = _fourier()
    truth = _truth()
    y = op.forward(truth)
    g = torch.Generator().manual_seed(4)
    x1, x2 = (truth + 0.5 * torch.randn(truth.shape, generator=g) for _ in range(2))
    h = ADMMTVz(op, y, **MRI)
    h(x1, torch.tensor(0.9))
    del1, u1 = h.del_z.clone(), h.u_z.clone()
    assert u1.abs().max() > 0
    out = h(x2, torch.tensor(0.8))
    fresh = ADMMTVz(op, y, **MRI)(x2, torch.tensor(0.8))
    # the second step used the carried state: by hand from del1, u1
    D = SliceDifference(0)
    b = h.aty(x2) + MRI["rho"] * D.adjoint(del1 - u1)
    r = b - h.normal(x2)
    manual = x2 + (r * r).sum() / (r * h.normal(r)).sum() * r
    assert torch.allclose(out, manual, atol=1e-5)
    assert _rmse(out, fresh) > 1e-3 * _rmse(fresh, 0 * fresh)
    assert h.runs == 1 and h.calls == 2
    # time going back up = a new sampling run: starts from zero state again
    again = h(x2, torch.tensor(0.95))
    assert torch.allclose(again, ADMMTVz(op, y, **MRI)(x2, torch.tensor(0.95)))
    assert h.runs == 2
    # a new volume (a new factory call) gets a new hook
    factory = DiffusionMBIRGuidance(**MRI, final_consistency=False)
    den = SliceGaussian()
    batch = {"x": truth, "observation": {"y": y, "operator": op}}
    w1, w2 = factory(den, batch), factory(den, batch)
    w1.post_step(x1, torch.tensor(0.5))
    assert w1.admm_step.del_z is not None and w2.admm_step.del_z is None
    assert w1.process is PROCESS                          # a pass-through DenoiserWrapper


# ------------------------------------------------------------------------ helpers: sampling
SAMPLERS = {"pc": sample_pc, "ddim": sample_ddim, "dpm_solver": sample_dpm_solver,
            "ode_euler": partial(sample_ode, method="euler")}


def _sample(sampler, hook, truth, steps=20, seed=0):
    den = SliceGaussian()
    geo = Euclidean()
    g = torch.Generator().manual_seed(seed)
    x = PROCESS.prior_sample(truth, geo, generator=g)
    ts = sampler_grid(PROCESS, sampler, steps)
    return sampler(den, x, ts, process=PROCESS, geometry=geo, generator=g, post_step=hook)


# ------------------------------------------------------------- (c) z-TV helps along z
@pytest.mark.parametrize("name", ["pc", "ddim"])
def test_z_tv_beats_slicewise_data_consistency_on_a_z_constant_volume(name) -> None:
    """Bug: the TV-along-z term not acting (z_tv ignored, D_z along the wrong axis, rho D^T D
    dropped from the system): the slices are then reconstructed independently and the
    z-constant structure is lost (the slice-wise ablation's error)."""
    op = _fourier()
    truth = _truth()
    y = op.forward(truth)
    errs, zstd = {}, {}
    for z_tv in (True, False):
        out = _sample(SAMPLERS[name], ADMMTVz(op, y, **MRI, z_tv=z_tv), truth, steps=20)
        errs[z_tv], zstd[z_tv] = _rmse(out, truth), float(out.std(0).mean())
    assert errs[True] < 0.8 * errs[False], errs
    assert zstd[True] < 0.5 * zstd[False], zstd
    assert errs[True] < _rmse(zero_filled(op, y), truth)


def test_admm_tv_3d_baseline() -> None:
    """Bug: the 3-D ADMM-TV baseline solving each slice alone (the core's batched solver on the
    [Z, ...] volume) or not reducing the zero-filled error."""
    op = _fourier()
    truth = _truth()
    y = op.forward(truth)
    x = admm_tv_3d(op, y, lamb=0.005, rho=0.05, outer=30, cg_iters=20)
    assert _rmse(x, truth) < 0.8 * _rmse(zero_filled(op, y), truth)
    assert float(x.std(0).mean()) < 0.3 * float(zero_filled(op, y).std(0).mean())


# ---------------------------------------------------------------------- (d) chunked network
def test_slice_prior_chunking_does_not_change_the_output() -> None:
    """Bug: chunks given the wrong times (the first chunk's t reused), slices mixed across a
    chunk, or a chunk size that drops the remainder."""
    torch.manual_seed(0)
    net = SlicePrior(image_size=H, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                     sigma_min=0.01, sigma_max=10.0, groups=4).eval().double()
    assert net.attention_levels == [1]
    # float64: float32 convolutions round differently for different batch sizes (~1e-6)
    x = torch.randn(Z, 1, H, H, dtype=torch.float64)
    t = torch.rand(Z, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x, t)
        for c in (1, 3, 5, 8, 20):
            net.chunk = c
            assert torch.allclose(net(x, t), whole, atol=1e-12, rtol=1e-10), c
        net.chunk = None
        # NCSN++ parametrisation: output = h / sigma(t), h fed log sigma(t)
        net.scale_by_sigma = False
        raw = net(x, t)
        net.scale_by_sigma = True
    assert torch.allclose(whole * net.sigma(t).view(-1, 1, 1, 1), raw, atol=1e-5, rtol=1e-4)
    # the time features see log sigma(t) (NCSN++'s Fourier embedding), with frequencies of std 16
    seen = []
    handle = net.unet.time[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        net(x, t)
    handle.remove()
    assert torch.allclose(seen[0].double(), net.sigma(t).log(), atol=1e-10)
    assert 8 < float(net.unet.time[0].weight.std()) < 32
    den = Denoiser(net, PROCESS, prediction="score")
    pred = den(x, t, Euclidean())
    assert torch.allclose(pred.eps, -raw, atol=1e-5, rtol=1e-4)     # eps = -h


# -------------------------------------------------------------- (e) through the core's loop
class _Module(nn.Module):
    """What workbench.conditional uses of a DiffusionModule, around the exact slice prior."""

    def __init__(self, sampler) -> None:
        super().__init__()
        self.process = PROCESS
        self.denoiser = SliceGaussian()
        self.geometry = Euclidean()
        self.sampler = sampler
        self.sample_steps, self.sample_spacing = 20, None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_guidance_through_the_conditional_loop_with_every_sampler(name) -> None:
    """Bug: the hook not reaching the sampler (no post_step found through the wrapper), the
    ADMM state leaking from one posterior sample into the next, or a sampler whose output
    misses the data: ||A x - y|| / ||y|| must be small for every sampler."""
    op = _fourier()
    truth = _truth()
    y = op.forward(truth)
    made = []
    factory = DiffusionMBIRGuidance(**MRI, final_consistency=False)

    def spy(den, batch, generator=None):
        w = factory(den, batch, generator)
        made.append(w)
        return w

    batch = {"x": truth, "observation": {"y": y, "operator": op}}
    g = torch.Generator().manual_seed(0)
    s = conditional.posterior_samples(_Module(SAMPLERS[name]), spy, batch, 2, generator=g)
    assert s.shape == (2, *truth.shape)
    hook = made[0].admm_step
    assert hook.runs == 2                          # one fresh ADMM state per posterior sample
    for k in range(2):
        assert data_residual(op, s[k], y) < 0.02, (name, data_residual(op, s[k], y))
        assert _rmse(s[k], truth) < 0.8 * _rmse(zero_filled(op, y), truth)
    assert float(s.std(0).mean()) > 0 or name in ("ddim", "dpm_solver", "ode_euler")
    unguided = _sample(SAMPLERS[name], None, truth)
    assert data_residual(op, unguided, y) > 0.1


# ------------------------------------------------------------------- (f) final consistency
def test_final_consistency_reduces_the_residual() -> None:
    """Bug: the final Kaczmarz step not applied at the last time (t_end), applied with the
    wrong sign / normaliser, or dividing by zero where A^T A 1 = 0."""
    truth = _truth()
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(truth.shape, generator=g) < 0.3).float()
    for op in (_fourier(), Mask(mask)):
        y = op.forward(truth)
        res = {}
        for final in (False, True):
            hook = ADMMTVz(op, y, **MRI, final_consistency=final, t_end=PROCESS.t_end)
            out = _sample(sample_ddim, hook, truth)
            assert torch.isfinite(out).all()
            res[final] = data_residual(op, out, y)
        assert res[True] < 0.6 * res[False], (type(op).__name__, res)
        if isinstance(op, Mask):
            assert res[True] < 1e-6                   # A A^T = I on the observed entries: exact
    x = truth + torch.randn(truth.shape, generator=g)
    h = ADMMTVz(Mask(mask), Mask(mask).forward(truth))
    assert data_residual(Mask(mask), h.final_consistency(x), Mask(mask).forward(truth)) < 1e-6


def test_factory_checks() -> None:
    """Bug: a batch of several volumes (or slices as [B, H, W]) accepted silently, or bad
    hyperparameters failing deep inside the sampler."""
    op = _fourier()
    truth = _truth()
    den = SliceGaussian()
    with pytest.raises(ConfigError):
        DiffusionMBIRGuidance()(den, {"x": truth[:, 0], "observation": {"y": op.forward(truth), "operator": op}})
    with pytest.raises(ConfigError):
        DiffusionMBIRGuidance()(den, {"x": truth, "observation": {"y": op.forward(truth)}})
    with pytest.raises(ConfigError):
        DiffusionMBIRGuidance(rho=0.0)


# --------------------------------------------------------- reference scaling and the CT projector
class _ScaledAdjoint:
    """The reference's convention: ``adjoint`` = c times the true adjoint (its grid_sample
    backprojection scaled by pi / (2 n_views))."""

    def __init__(self, op, c) -> None:
        self.op, self.c, self.noise_std = op, c, 0.0

    def forward(self, x):
        return self.op.forward(x)

    def adjoint(self, y):
        return self.c * self.op.adjoint(y)


def test_reference_scaling_gives_the_same_iterates() -> None:
    """Bug: the documented translation of the reference's (lamb, rho) to an exact-adjoint
    operator (divide both by c = pi / (2 n_views)) being wrong: the iterates would differ."""
    from workbench.domains.medical.mbir import reference_ct_hyperparameters

    op = _fourier(torch.float64)
    truth = _truth(torch.float64)
    y = op.forward(truth)
    g = torch.Generator().manual_seed(6)
    xs = [truth + 0.3 * torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(3)]
    hp = reference_ct_hyperparameters(8, lamb=0.04, rho=10.0)
    ref = ADMMTVz(_ScaledAdjoint(op, torch.pi / 16), y, lamb=0.04, rho=10.0, final_consistency=True, t_end=0.1)
    ours = ADMMTVz(op, y, **hp, final_consistency=True, t_end=0.1)
    for t, x in zip((0.9, 0.5, 0.1), xs):
        assert torch.allclose(ref(x, t), ours(x, t), atol=1e-10)
    assert torch.allclose(ref.u_z, ours.u_z, atol=1e-12)


def test_with_the_ct_projector() -> None:
    """Bug: the step or the final consistency not working with the CT projector (sinograms
    shaped differently from the volume), or the analytic baseline not using its FBP."""
    ct = pytest.importorskip("workbench.operators.ct")
    op = ct.ParallelBeamCT(16, ct.sparse_view_angles(8))
    truth = _truth()
    y = op.forward(truth)
    assert y.shape[0] == Z
    assert torch.allclose(zero_filled(op, y), op.fbp(y))
    g = torch.Generator().manual_seed(7)
    x = truth + 0.3 * torch.randn(truth.shape, generator=g)
    hook = ADMMTVz(op, y, lamb=0.04, rho=1.0, final_consistency=True, t_end=PROCESS.t_end)
    out = hook(x, torch.tensor(0.5))
    assert data_residual(op, out, y) < data_residual(op, x, y)
    assert data_residual(op, hook.final_consistency(x), y) < 0.9 * data_residual(op, x, y)   # one SIRT-like step
    rec = _sample(sample_ddim, ADMMTVz(op, y, lamb=0.04, rho=1.0, final_consistency=True, t_end=PROCESS.t_end),
                  truth)
    assert _rmse(rec, truth) < _rmse(zero_filled(op, y), truth)


def test_guidance_reads_ct_weights_in_the_reference_units() -> None:
    """Guards the reference's CT setting (lamb 0.04, rho 10, tuned with an A^T that is pi / (2 n)
    times the exact adjoint) being used unconverted with the exact-adjoint ParallelBeamCT."""
    import math

    from workbench.domains.medical.mbir import DiffusionMBIRGuidance
    from workbench.operators import FourierSubsample, ParallelBeamCT, mri_mask, sparse_view_angles

    g = DiffusionMBIRGuidance(reference_scaling=True)
    lamb, rho = g.weights(ParallelBeamCT(16, sparse_view_angles(8)))
    c = math.pi / 16
    assert math.isclose(lamb, 0.04 / c) and math.isclose(rho, 10.0 / c)
    mri = FourierSubsample(mri_mask("uniform1d", (16, 16), 4.0, seed=0))
    assert g.weights(mri) == (0.04, 10.0)
    assert DiffusionMBIRGuidance().weights(ParallelBeamCT(16, sparse_view_angles(8))) == (0.04, 10.0)

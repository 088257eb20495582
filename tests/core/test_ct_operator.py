"""workbench.operators CT projector (ParallelBeamCT, FBP, angle sets) and MRI masks (mri_mask).

Each test names the bug it guards against.
"""
import math

import numpy as np
import pytest
import torch

from workbench.operators import (MRI_MASK_KINDS, FourierSubsample, ParallelBeamCT, admm_tv, cartesian_mask,
                                 check_adjoint, limited_angle_angles, mri_mask, sparse_view_angles)

skimage = pytest.importorskip("skimage")
from skimage.data import shepp_logan_phantom  # noqa: E402
from skimage.transform import iradon, radon, resize  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope="module")
def phantom():
    """The Shepp-Logan phantom (bundled with scikit-image) at 64 x 64, values in [0, 1]."""
    return resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)


def _psnr(a, ref):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(10 * np.log10(ref.max() ** 2 / np.mean((a - ref) ** 2)))


def test_angle_helpers():
    # guards: off-by-one / endpoint included in the angle sets
    assert torch.allclose(sparse_view_angles(8), torch.from_numpy(np.linspace(0, 180, 8, endpoint=False)))
    assert torch.equal(limited_angle_angles(90, 1), torch.arange(90, dtype=F64))
    assert limited_angle_angles(90, 3).numel() == 30 and float(limited_angle_angles(90, 3)[-1]) == 87


def test_default_detector_count():
    # guards: detector count not covering the diagonal (DiffusionMBIR: 363 bins for 256)
    assert ParallelBeamCT(256, sparse_view_angles(8)).n_detectors == 363
    assert ParallelBeamCT((40, 64), [0.0]).n_detectors == math.ceil(math.sqrt(2) * 64)
    assert ParallelBeamCT(32, [0.0], n_detectors=50).sinogram_shape == (1, 50)


@pytest.mark.parametrize("size,angles,x_shape", [
    (32, sparse_view_angles(8), (2, 32, 32)),                      # sparse view
    (32, limited_angle_angles(90, 1), (1, 32, 32)),                # limited angle
    ((24, 40), sparse_view_angles(12), (2, 1, 24, 40)),            # non-square
    ((40, 24), [3.7, 51.2, 133.0, 179.9], (1, 40, 24)),            # non-square, odd angles
    (32, sparse_view_angles(8), (6, 1, 32, 32)),                   # a volume [Z, 1, H, W]
    (32, limited_angle_angles(60, 7), (2, 3, 1, 32, 32)),           # two leading dims
])
def test_adjoint_exact(size, angles, x_shape):
    # guards: an approximate adjoint (e.g. a grid_sample / pixel-driven back-projection as A^T)
    op = ParallelBeamCT(size, angles)
    assert check_adjoint(op, x_shape) < 1e-12
    y = op.forward(torch.randn(x_shape, dtype=F64))
    assert y.shape == torch.Size((*x_shape[:-2], *op.sinogram_shape))
    assert op.adjoint(y).shape == torch.Size(x_shape)


def test_adjoint_float32():
    # guards: matrices cached in one dtype and used for another
    op = ParallelBeamCT(32, sparse_view_angles(8))
    assert check_adjoint(op, (2, 1, 32, 32), dtype=torch.float32) < 1e-5
    x = torch.randn(2, 1, 32, 32, dtype=F64)
    assert op.forward(x.float()).dtype == torch.float32
    assert torch.allclose(op.forward(x.float()).double(), op.forward(x), rtol=1e-5, atol=1e-4)


def test_batch_elements_independent():
    # guards: leading dims mixed up when flattening the batch (a volume = a batch of slices)
    op = ParallelBeamCT((24, 28), sparse_view_angles(10))
    g = torch.Generator().manual_seed(1)
    vol = torch.randn(5, 1, 24, 28, dtype=F64, generator=g)
    y = op.forward(vol)
    for z in range(5):
        assert torch.allclose(y[z, 0], op.forward(vol[z, 0]), atol=1e-12)
    yb = torch.randn(y.shape, dtype=F64, generator=g)
    at = op.adjoint(yb)
    for z in (0, 4):
        assert torch.allclose(at[z, 0], op.adjoint(yb[z, 0]), atol=1e-12)


def test_forward_is_differentiable_with_adjoint_as_backward():
    # guards: autograd through forward missing or wrong (DPS differentiates ||y - A x||^2)
    op = ParallelBeamCT((6, 5), [0.0, 30.0, 77.0])
    x = torch.randn(2, 6, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(op.forward, (x,))
    y = torch.randn(2, *op.sinogram_shape, dtype=F64)
    (g,) = torch.autograd.grad((op.forward(x) * y).sum(), x)
    assert torch.allclose(g, op.adjoint(y), atol=1e-12)


@pytest.mark.parametrize("angles", [np.arange(180.0), np.linspace(0, 180, 8, endpoint=False),
                                    np.array([0.0, 17.0, 33.3, 90.0, 101.5, 150.0, 178.0])])
def test_forward_matches_skimage_radon(phantom, angles):
    # guards: a rotated (theta + 90), mirrored (t -> -t) or shifted geometry vs skimage's convention
    op = ParallelBeamCT(64, torch.from_numpy(angles))
    ours = op.forward(torch.from_numpy(phantom)).numpy()             # [n_angles, n_detectors]
    ref = radon(phantom, angles, circle=False)                       # [n_detectors, n_angles]
    assert ours.shape == ref.T.shape
    rel = np.linalg.norm(ours - ref.T) / np.linalg.norm(ref)
    assert rel < 1e-6, rel


def test_forward_matches_skimage_radon_non_square(phantom):
    # guards: rows/columns swapped or the wrong rotation centre for H != W
    img = phantom[10:50]                                             # 40 x 64
    angles = np.array([0.0, 30.0, 45.0, 90.0, 120.0, 170.0])
    ours = ParallelBeamCT((40, 64), torch.from_numpy(angles)).forward(torch.from_numpy(img)).numpy()
    ref = radon(img, angles, circle=False)
    assert np.linalg.norm(ours - ref.T) / np.linalg.norm(ref) < 1e-6


def test_fbp_180_views_recovers_phantom(phantom):
    # guards: a wrong FBP scale (pi / n_angles), filter or back-projection geometry.
    # skimage's iradon (ramp, same geometry) reaches ~28.2 dB on the 64^2 phantom from 180 views:
    # that is the discretisation limit of ramp FBP (sharp phantom edges, ramp-boosted aliasing), so
    # we ask for > 27 dB and to be within 0.5 dB of iradon; a scale off by 2x gives ~12 dB.
    angles = np.arange(180.0)
    op = ParallelBeamCT(64, torch.from_numpy(angles))
    y = op.forward(torch.from_numpy(phantom))
    rec = op.fbp(y).numpy()
    ref = iradon(radon(phantom, angles, circle=False), angles, circle=False, filter_name="ramp")
    p, p_ref = _psnr(rec, phantom), _psnr(ref, phantom)
    assert p > 27.0 and p > p_ref - 0.5, (p, p_ref)
    # pixel by pixel the same reconstruction as iradon (measured 3e-4 relative, all of it in the corner
    # pixel; a ramp filter without zero-padding (circular convolution) gives 1e-2)
    assert np.linalg.norm(rec - ref) / np.linalg.norm(ref) < 2e-3
    # windows trade resolution for less ringing (lower PSNR on a noiseless phantom): same as iradon's
    sino = radon(phantom, angles, circle=False)
    for window in ("shepp-logan", "cosine"):
        p_w = _psnr(op.fbp(y, window=window).numpy(), phantom)
        p_w_ref = _psnr(iradon(sino, angles, circle=False, filter_name=window), phantom)
        assert abs(p_w - p_w_ref) < 0.1 and p_w > 24.0, (window, p_w, p_w_ref)


def test_fbp_8_views_much_worse(phantom):
    # guards: a test setup where sparse views do not lose information (sanity of the benchmark)
    x = torch.from_numpy(phantom)
    full, sparse = ParallelBeamCT(64, limited_angle_angles(180, 1)), ParallelBeamCT(64, sparse_view_angles(8))
    p_full = _psnr(full.fbp(full.forward(x)).numpy(), phantom)
    p_sparse = _psnr(sparse.fbp(sparse.forward(x)).numpy(), phantom)
    assert p_sparse < p_full - 8.0, (p_sparse, p_full)


def _blocky_volume(z=6, h=32):
    """A piecewise-constant 3-D phantom [1, Z, H, W]: a disc, an ellipse and a box, varying in z."""
    x = torch.zeros(1, z, h, h, dtype=F64)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(h, dtype=F64), indexing="ij")
    for k in range(z):
        x[0, k][(yy - h / 2) ** 2 + (xx - h / 2) ** 2 < (0.3 * h + 0.5 * k) ** 2] = 0.5
        x[0, k][(yy - 0.4 * h) ** 2 / 16 + (xx - 0.55 * h) ** 2 / 36 < 1] = 1.0
    x[0, 1:4, 20:26, 8:14] = 0.8
    return x


def test_admm_tv_beats_fbp_sparse_view():
    # guards: CT operator and ADMM-TV not composing (wrong adjoint makes CG diverge) / no TV gain.
    # ADMM starts at 0 (as DiffusionMBIR's baseline): the default start A^T y is unscaled for CT.
    x = _blocky_volume()
    op = ParallelBeamCT(32, sparse_view_angles(8))
    g = torch.Generator().manual_seed(0)
    y = op.forward(x)
    y = y + 0.01 * float(y.abs().max()) * torch.randn(y.shape, dtype=F64, generator=g)
    p_fbp = _psnr(op.fbp(y), x)
    rec = admm_tv(op, y, rho=1.0, lam=0.1, axes=(-3, -2, -1), iters=20, cg_iters=20, x0=torch.zeros_like(x))
    p_tv = _psnr(rec, x)
    assert p_tv > p_fbp + 8.0, (p_tv, p_fbp)


def test_shape_errors():
    op = ParallelBeamCT((24, 32), [0.0, 90.0])
    with pytest.raises(ValueError, match="expected"):
        op.forward(torch.zeros(2, 32, 24))
    with pytest.raises(ValueError, match="expected"):
        op.adjoint(torch.zeros(2, 3, op.n_detectors))


# ---- MRI masks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["uniform1d", "gaussian1d"])
@pytest.mark.parametrize("shape,acc,cf", [((64, 64), 4, 0.08), ((48, 80), 3, 0.15), ((32, 96), 6.5, 0.04)])
def test_mri_mask_1d_counts_and_centre(kind, shape, acc, cf):
    # guards: drawing with replacement (fewer lines than 1/acc) or a centre band off the DC line
    h, w = shape
    m = mri_mask(kind, shape, acc, center_fraction=cf, seed=2)
    assert m.shape == shape and m.dtype == torch.float32
    assert torch.equal(m, m[:1].expand(h, w))                        # whole lines
    assert int(m[0].sum()) == round(w / acc)
    n_c = round(w * cf)
    assert bool(m[0, w // 2 - n_c // 2: w // 2 - n_c // 2 + n_c].all()) and bool(m[0, w // 2])


@pytest.mark.parametrize("shape,acc", [((64, 64), 4), ((48, 80), 8), ((32, 32), 2.5)])
def test_mri_mask_2d_counts(shape, acc):
    # guards: duplicate points (with replacement) making the acceleration larger than asked
    m = mri_mask("gaussian2d", shape, acc, seed=0)
    assert m.shape == shape and int(m.sum()) == round(shape[0] * shape[1] / acc)


@pytest.mark.parametrize("kind", MRI_MASK_KINDS)
def test_mri_mask_seeded_and_global_rng_untouched(kind):
    # guards: masks drawn from the global torch / numpy RNG (not reproducible, perturbs training)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = mri_mask(kind, (64, 64), 4, seed=5)
    b = mri_mask(kind, (64, 64), 4, seed=5)
    c = mri_mask(kind, (64, 64), 4, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), torch_state)
    s2 = np.random.get_state()
    assert s2[0] == np_state[0] and np.array_equal(s2[1], np_state[1]) and s2[2:] == np_state[2:]


def test_gaussian_masks_concentrate_at_centre():
    # guards: a "gaussian" mask that is in fact uniform (or centred on the corner, unshifted k-space)
    w = 128
    central = slice(w // 2 - w // 8, w // 2 + w // 8)                 # the central quarter of lines
    frac_g = np.mean([mri_mask("gaussian1d", (w, w), 4, 0.04, seed=s)[0, central].mean().item() for s in range(10)])
    frac_u = np.mean([mri_mask("uniform1d", (w, w), 4, 0.04, seed=s)[0, central].mean().item() for s in range(10)])
    assert frac_g > 0.55 and frac_u < 0.45, (frac_g, frac_u)  # expected ~0.67 and ~0.34
    m2 = mri_mask("gaussian2d", (w, w), 8, seed=0)
    c = m2[w // 2 - 8: w // 2 + 8, w // 2 - 8: w // 2 + 8].mean()
    corner = m2[:w // 4, :w // 4].mean()
    assert c > 0.8 and corner < 0.01, (float(c), float(corner))


def test_cartesian_mask_is_uniform1d_and_errors():
    # guards: two diverging implementations of the same mask; a silently shrunk centre band
    assert torch.equal(cartesian_mask((32, 64), 4, 0.125, seed=3), mri_mask("uniform1d", (32, 64), 4, 0.125, seed=3))
    with pytest.raises(ValueError, match="centre band"):
        mri_mask("uniform1d", (64, 64), 8, center_fraction=0.25)
    with pytest.raises(ValueError, match="unknown kind"):
        mri_mask("radial", (64, 64), 4)


def test_mri_mask_with_fourier_subsample():
    # guards: a mask in uncentred k-space order (FourierSubsample uses fftshift: DC at [H//2, W//2])
    x = torch.ones(1, 32, 32, dtype=F64)                              # all energy at DC
    for kind in MRI_MASK_KINDS:
        op = FourierSubsample(mri_mask(kind, (32, 32), 4, seed=0))
        assert torch.allclose(op.adjoint(op.forward(x)), x)           # DC sampled -> exact
        assert check_adjoint(op, (2, 32, 32)) < 1e-12

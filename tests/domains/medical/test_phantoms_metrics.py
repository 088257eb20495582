"""Procedural phantoms (reproducible by seed, no global RNG) and the three-view PSNR / SSIM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from workbench.domains.medical.metrics import slice_metrics, view_slices, volume_metrics  # noqa: E402
from workbench.domains.medical.phantoms import TISSUES, random_ellipsoid_phantom, shepp_logan_3d  # noqa: E402


# -- phantoms -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [shepp_logan_3d, random_ellipsoid_phantom])
@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_phantoms_are_reproducible_by_seed(fn, modality) -> None:
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    a = fn((12, 24, 20), modality, seed=3)
    b = fn((12, 24, 20), modality, seed=3)
    c = fn((12, 24, 20), modality, seed=4)
    assert a.shape == (12, 24, 20) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.random.get_rng_state(), torch_state)
    lo, hi = min(TISSUES[modality].values()), max(TISSUES[modality].values())
    assert float(a.min()) >= lo * 1.1 - 1e-6 if lo < 0 else float(a.min()) >= 0
    assert float(a.max()) <= hi * 1.1 + 1e-6
    assert float(a.min()) == TISSUES[modality]["air"]            # the corners are air


def test_canonical_shepp_logan_has_the_head_structure() -> None:
    v = shepp_logan_3d((33, 65, 65), "ct", seed=None)
    assert torch.equal(v, shepp_logan_3d((33, 65, 65), "ct", seed=7, jitter=0.0))
    centre = v[16]
    assert centre[32, 0] == -1000                                 # air outside
    assert centre[32, 32] == TISSUES["ct"]["grey"]                # brain at the centre
    assert (centre == TISSUES["ct"]["bone"]).any() and (centre == TISSUES["ct"]["csf"]).any()
    mri = shepp_logan_3d((17, 33, 33), "mri")
    assert float(mri.min()) == 0.0 and float(mri.max()) <= 1.0


# -- volume metrics -----------------------------------------------------------------------------------------
def _volume(seed: int = 0) -> torch.Tensor:
    v = shepp_logan_3d((16, 32, 32), "mri", seed=seed)
    return v + 0.05 * torch.rand(v.shape, generator=torch.Generator().manual_seed(seed))


def test_identical_volumes_give_inf_psnr_and_unit_ssim() -> None:
    v = _volume()
    m = volume_metrics(v, v, data_range=1.0)
    assert set(m) == {f"{k}_{view}" for k in ("psnr", "ssim") for view in ("axial", "coronal", "sagittal")}
    assert all(math.isinf(m[f"psnr_{view}"]) for view in ("axial", "coronal", "sagittal"))
    assert all(m[f"ssim_{view}"] == pytest.approx(1.0) for view in ("axial", "coronal", "sagittal"))
    assert volume_metrics(v.unsqueeze(1), v.unsqueeze(1)) == m       # [Z, 1, H, W] accepted


def test_exact_slices_are_left_out_of_the_psnr_mean() -> None:
    """An exactly reproduced (e.g. all-air) axial slice would make the mean inf: it is left out, the
    other slices' PSNRs are averaged; SSIM counts it as 1."""
    t = _volume().double()
    p = t + 0.01
    p[0] = t[0]
    m = volume_metrics(p, t, data_range=1.0)
    assert m["psnr_axial"] == pytest.approx(40.0, abs=1e-6)
    assert volume_metrics(t + 0.01, t)["ssim_axial"] < m["ssim_axial"] < 1.0


def test_known_noise_psnr_matches_the_formula() -> None:
    t = _volume()
    g = torch.Generator().manual_seed(1)
    noise = 0.02 * torch.randn(t.shape, generator=g, dtype=torch.float64)
    p = t.double() + noise
    m = volume_metrics(p, t, data_range=1.0)
    for view, axis in (("axial", 0), ("coronal", 1), ("sagittal", 2)):
        mse = noise.pow(2).movedim(axis, 0).flatten(1).mean(1)
        expected = float((10 * torch.log10(1.0 / mse)).mean())
        assert m[f"psnr_{view}"] == pytest.approx(expected, abs=1e-6), view
        assert m[f"psnr_{view}"] == pytest.approx(-10 * math.log10(0.02 ** 2), abs=0.3)
    m2 = volume_metrics(p * 2000 - 1000, t * 2000 - 1000, data_range=2000.0)   # HU units, same PSNR
    assert m2["psnr_axial"] == pytest.approx(m["psnr_axial"], abs=1e-6)


def test_slice_axes_are_the_three_views() -> None:
    v = torch.arange(4 * 5 * 6, dtype=torch.float64).reshape(4, 5, 6)
    assert view_slices(v, "axial").shape == (4, 5, 6)
    assert view_slices(v, "coronal").shape == (5, 4, 6) and np.array_equal(view_slices(v, "coronal")[2], v[:, 2, :])
    assert view_slices(v, "sagittal").shape == (6, 4, 5) and np.array_equal(view_slices(v, "sagittal")[3], v[:, :, 3])


@pytest.mark.parametrize("axis,view", [(0, "axial"), (1, "coronal"), (2, "sagittal")])
def test_corruption_along_one_axis_hurts_the_other_views_more(axis: int, view: str) -> None:
    """One offset per slice along ``axis`` (z-striping for axis 0, what slice-wise methods produce): each
    slice of that view sees a constant shift (little harm to its SSIM, its own PSNR), the two other views
    see stripes across every slice (lower PSNR by Jensen, lower SSIM)."""
    t = _volume().double()
    offsets = torch.zeros(t.shape[axis], dtype=torch.float64)
    offsets[::3] = 0.15
    offsets += 0.002
    shape = [1, 1, 1]
    shape[axis] = -1
    p = t + offsets.reshape(shape)
    m = volume_metrics(p, t, data_range=1.0)
    others = [v for v in ("axial", "coronal", "sagittal") if v != view]
    for o in others:
        assert m[f"psnr_{view}"] > m[f"psnr_{o}"] + 3, m
        assert m[f"ssim_{view}"] > m[f"ssim_{o}"], m


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="differ"):
        volume_metrics(torch.zeros(8, 8, 8), torch.zeros(8, 8, 9))
    with pytest.raises(ValueError, match="at least 3"):
        volume_metrics(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))


def test_slice_metrics_are_floats_and_zero_for_the_same_slices() -> None:
    r = _volume().clamp(0, 1).unsqueeze(1)
    m = slice_metrics(r, r)
    assert all(isinstance(v, float) for v in m.values())
    assert m["histogram_tv"] == 0 and m["mean_gap"] == 0 and m["mean_image_rmse"] == 0
    assert slice_metrics(torch.zeros_like(r), r)["histogram_tv"] > 0.5


def test_constant_truth_slices_do_not_enter_the_view_means() -> None:
    """Guards all-air slices (reproduced up to round-off by a linear method, ~150 dB) dominating a
    view's PSNR mean: the benchmark's zero-filled MRI read 41.7 dB coronal instead of 17.4."""
    import numpy as np

    from workbench.domains.medical.metrics import volume_metrics

    rng = np.random.default_rng(0)
    truth = np.zeros((8, 16, 16))
    truth[2:6, 4:12, 4:12] = rng.uniform(0.2, 1.0, (4, 8, 8))       # slices 0, 1, 6, 7: all air
    pred = truth + 0.05 * rng.standard_normal(truth.shape) * (truth > 0)
    pred[[0, 1, 6, 7]] = 1e-9                                           # air kept to round-off
    inner = volume_metrics(pred[2:6], truth[2:6])
    whole = volume_metrics(pred, truth)
    assert abs(whole["psnr_axial"] - inner["psnr_axial"]) < 1e-9, (whole, inner)
    assert abs(whole["ssim_axial"] - inner["ssim_axial"]) < 1e-9

"""NIfTI / DICOM I/O of the medical domain: bit-exact affines and zooms, HU through the window,
one-line errors naming the file for bad files (built here in tmp_path), never overwriting an input."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel")

from workbench.errors import DataError  # noqa: E402

from workbench.domains.medical.io import (HUWindow, read_dicom_series, read_volume, stack_to_volume, to_ras,  # noqa: E402
                                          volume_to_stack, write_volume)

def _oblique_affine() -> np.ndarray:
    """An LPS-ish, rotated, anisotropic affine whose entries are float32-exact (as a header stores them)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[-c, -s, 0], [s, -c, 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 0.8, 2.5])
    aff[:3, 3] = [101.5, -33.25, 12.0]
    return aff.astype(np.float32).astype(np.float64)


def _ct_file(path: Path, shape=(12, 10, 7)) -> tuple[Path, np.ndarray]:
    """An int16 CT file with slope 1 / intercept -1024 (raw = HU + 1024, as CT_small.dcm)."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    raw = (hu + 1024).astype(np.int16)
    img = nib.Nifti1Image(raw, _oblique_affine())
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(1.0, -1024.0)
    img.header["descrip"] = b"test CT"
    nib.save(img, str(path))
    return path, hu.astype(np.float64)


def _one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


# -- round trips ------------------------------------------------------------------------------------------
def test_round_trip_keeps_affine_zooms_orientation_bit_exactly_and_hu(tmp_path: Path) -> None:
    src, hu = _ct_file(tmp_path / "ct.nii.gz")
    vol, meta = read_volume(src)
    assert vol.dtype == torch.float32 and tuple(vol.shape) == hu.shape
    np.testing.assert_array_equal(vol.numpy(), hu)                       # slope / intercept applied: HU
    assert meta["axcodes"] == "".join(nib.aff2axcodes(_oblique_affine()))
    assert meta["dtype"] == "int16" and meta["descrip"] == "test CT" and meta["source"] == str(src.resolve())
    window = HUWindow(-1000, 1500)
    x = window.normalise(vol)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    out = write_volume(tmp_path / "out" / "ct_copy.nii.gz", x, meta, window=window)
    vol2, meta2 = read_volume(out)
    assert np.array_equal(meta2["affine"], meta["affine"])               # bit-exact
    assert meta2["zooms"] == meta["zooms"] and meta2["axcodes"] == meta["axcodes"]
    ref = nib.load(str(src))
    assert np.array_equal(nib.load(str(out)).affine, ref.affine)
    np.testing.assert_allclose(vol2.numpy(), hu, rtol=0, atol=2e-3 * 2500 / 2 ** 10)   # float32 of the window inversion
    assert float((vol2 - vol).abs().max()) < 1e-3


def test_hu_window_inverts_and_clips() -> None:
    w = HUWindow()
    hu = torch.tensor([-1000.0, -500.0, 0.0, 40.0, 1000.0])
    assert torch.allclose(w.denormalise(w.normalise(hu)), hu, atol=1e-4)
    assert torch.equal(w.normalise(torch.tensor([-3000.0, 3000.0])), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        HUWindow(10, 10)


def test_round_trip_of_the_mni_template(tmp_path: Path, medical_file) -> None:
    src = medical_file("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol, meta = read_volume(src)
    assert tuple(vol.shape) == (197, 233, 189) and meta["axcodes"] == "RAS" and meta["zooms"] == (1.0, 1.0, 1.0)
    out = write_volume(tmp_path / "mni.nii.gz", vol, meta)
    vol2, meta2 = read_volume(out)
    assert np.array_equal(meta2["affine"], meta["affine"]) and meta2["zooms"] == meta["zooms"]
    assert torch.equal(vol2, vol)


def test_stack_permutation_is_documented_and_invertible() -> None:
    v = torch.arange(4 * 3 * 5, dtype=torch.float32).reshape(4, 3, 5)   # [X, Y, Z]
    s = volume_to_stack(v)
    assert s.shape == (5, 1, 3, 4)
    assert s[2, 0, 1, 3] == v[3, 1, 2]                                    # stack[k, 0, j, i] = volume[i, j, k]
    assert torch.equal(stack_to_volume(s), v)


def test_to_ras_keeps_every_voxels_world_position(tmp_path: Path) -> None:
    src, hu = _ct_file(tmp_path / "ct.nii.gz")
    vol, meta = read_volume(src)
    ras, m2 = to_ras(vol, meta)
    assert m2["axcodes"] == "RAS"
    a1, a2 = np.asarray(meta["affine"]), np.asarray(m2["affine"])
    # the voxel at each index of the reoriented volume sits where the same value sat before
    for idx in [(0, 0, 0), (3, 4, 5), tuple(s - 1 for s in ras.shape)]:
        world = a2 @ np.array([*idx, 1.0])
        old = np.linalg.solve(a1, world)[:3]
        old_i = tuple(int(round(c)) for c in old)
        assert np.allclose(old, old_i, atol=1e-4)
        assert ras[idx] == vol[old_i]


# -- bad files: one line naming the file ----------------------------------------------------------------
def test_truncated_gzip_is_a_one_line_data_error(tmp_path: Path) -> None:
    src, _ = _ct_file(tmp_path / "ct.nii.gz", shape=(40, 40, 20))
    bad = tmp_path / "truncated.nii.gz"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        read_volume(bad)
    assert "truncated" in _one_line(e, bad).lower() or "corrupt" in str(e.value).lower()


def test_corrupt_and_non_nifti_files(tmp_path: Path) -> None:
    src, _ = _ct_file(tmp_path / "ct.nii.gz")
    bad = tmp_path / "flipped.nii.gz"
    data = bytearray(src.read_bytes())
    for i in range(40, 200):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        read_volume(bad)
    _one_line(e, bad)
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 30)
    with pytest.raises(DataError) as e:
        read_volume(text)
    _one_line(e, text)
    with pytest.raises(DataError) as e:
        read_volume(tmp_path / "missing.nii.gz")
    _one_line(e, tmp_path / "missing.nii.gz")


def test_not_3d_is_refused_but_a_single_volume_4d_file_is_read(tmp_path: Path) -> None:
    aff = np.eye(4)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 2), np.float32), aff), str(four))
    with pytest.raises(DataError) as e:
        read_volume(four)
    assert "4-D image with 2 volumes" in _one_line(e, four)
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), aff), str(two))
    with pytest.raises(DataError) as e:
        read_volume(two)
    assert "2-D" in _one_line(e, two)
    one = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7, 1), np.float32), aff), str(one))
    vol, meta = read_volume(one)
    assert tuple(vol.shape) == (5, 6, 7) and meta["shape"] == (5, 6, 7)


@pytest.mark.parametrize("compressed", [True, False])
def test_header_dims_that_do_not_match_the_data_are_refused(tmp_path: Path, compressed: bool) -> None:
    """A header patched to fewer slices than stored (nibabel alone would read a prefix silently) and
    one patched to more (the data runs out)."""
    suffix = ".nii.gz" if compressed else ".nii"
    src = tmp_path / f"ok{suffix}"
    nib.save(nib.Nifti1Image(np.arange(8 * 8 * 10, dtype=np.float32).reshape(8, 8, 10), np.eye(4)), str(src))
    raw = gzip.decompress(src.read_bytes()) if compressed else src.read_bytes()
    for z, word in ((5, "mislabelled"), (14, "truncated")):
        hdr = bytearray(raw)
        dims = np.frombuffer(bytes(hdr[40:56]), dtype="<i2").copy()
        assert list(dims[:4]) == [3, 8, 8, 10]
        dims[3] = z
        hdr[40:56] = dims.tobytes()
        bad = tmp_path / f"dims{z}{suffix}"
        bad.write_bytes(gzip.compress(bytes(hdr)) if compressed else bytes(hdr))
        with pytest.raises(DataError) as e:
            read_volume(bad)
        msg = _one_line(e, bad)
        assert word in msg and "8x8x" in msg, msg


def test_non_finite_values_are_refused(tmp_path: Path) -> None:
    v = np.zeros((6, 6, 6), np.float32)
    v[1, 2, 3] = np.nan
    v[4, 4, 4] = np.inf
    bad = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(bad))
    with pytest.raises(DataError) as e:
        read_volume(bad)
    msg = _one_line(e, bad)
    assert "2 non-finite" in msg and "(1, 2, 3)" in msg


# -- never overwrite an input ---------------------------------------------------------------------------
def test_write_volume_never_overwrites_its_input(tmp_path: Path) -> None:
    src, _ = _ct_file(tmp_path / "ct.nii.gz")
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    vol, meta = read_volume(src)
    for target in (src, tmp_path / "." / "ct.nii.gz"):
        with pytest.raises(DataError) as e:
            write_volume(target, vol, meta)
        assert "overwrite" in _one_line(e, target)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(src)
    with pytest.raises(DataError):
        write_volume(link, vol, meta)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    out = write_volume(tmp_path / "other.nii.gz", vol, meta)
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp files left


# -- DICOM ------------------------------------------------------------------------------------------------
def test_dicom_slice_gives_hu_and_an_affine(medical_file) -> None:
    pydicom = pytest.importorskip("pydicom")
    path = medical_file("CT_small.dcm")
    vol, meta = read_dicom_series(path)
    ds = pydicom.dcmread(str(path))
    assert tuple(vol.shape) == (128, 128, 1)
    np.testing.assert_array_equal(vol[:, :, 0].numpy(), ds.pixel_array.T.astype(np.float64) - 1024)   # HU = raw - 1024
    ps = [float(v) for v in ds.PixelSpacing]
    assert np.allclose(meta["zooms"][:2], [ps[1], ps[0]])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    assert np.allclose(meta["affine"][:3, 3], ipp * [-1, -1, 1])            # LPS -> RAS


def test_dicom_series_is_sorted_by_position(tmp_path: Path, medical_file) -> None:
    pydicom = pytest.importorskip("pydicom")
    path = medical_file("CT_small.dcm")
    ds = pydicom.dcmread(str(path))
    base = np.array([float(v) for v in ds.ImagePositionPatient])
    raw = ds.pixel_array.copy()
    order = [3, 0, 4, 1, 2]                       # written out of order, named so the file order is wrong too
    for n, k in enumerate(order):
        d = pydicom.dcmread(str(path))
        d.ImagePositionPatient = [float(base[0]), float(base[1]), float(base[2] + 2.5 * k)]
        arr = (raw + 10 * k).astype(raw.dtype)
        d.PixelData = arr.tobytes()
        d.save_as(str(tmp_path / f"im{n}.dcm"))
    vol, meta = read_dicom_series(tmp_path)
    assert vol.shape[-1] == 5
    for k in range(5):
        np.testing.assert_array_equal(vol[:, :, k].numpy(), raw.T.astype(np.float64) + 10 * k - 1024)
    assert np.isclose(meta["zooms"][2], 2.5)
    assert np.allclose(meta["affine"][:3, 2], [0, 0, 2.5])


def test_dicom_without_pydicom_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ModuleNotFoundError) as e:
        read_dicom_series(tmp_path)
    assert "pydicom" in str(e.value) and "pip install" in str(e.value) and "\n" not in str(e.value)


def test_write_accepts_numpy_and_copies_the_shared_file_untouched(tmp_path: Path, medical_file) -> None:
    src = medical_file("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    copy = tmp_path / "in.nii.gz"
    shutil.copy(src, copy)
    vol, meta = read_volume(copy)
    out = write_volume(tmp_path / "np.nii", vol.numpy()[:10, :10, :10], meta)
    v2, _ = read_volume(out)
    assert torch.equal(v2, vol[:10, :10, :10])

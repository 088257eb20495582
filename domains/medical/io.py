"""Native formats of the medical domain: NIfTI volumes (nibabel), DICOM series (pydicom, optional)
and the CT intensity window.

Conventions
-----------
* :func:`read_volume` returns the voxel array in the file's own index order ``[X, Y, Z]`` (as
  nibabel does; no reorientation) and a metadata record with the affine, the voxel spacing
  (``zooms``), the orientation code (``nib.aff2axcodes``, e.g. ``"RAS"``), the header's data type
  and description and the source file. :func:`to_ras` reorients a volume to RAS+ (then the third
  index runs inferior -> superior, so axial slices are ``volume[:, :, k]``).
* :func:`write_volume` writes a NIfTI-1 file atomically (temporary file + rename) with the affine and
  zooms of the record, bit for bit, and refuses to write over the file the record was read from.
* CT is kept in Hounsfield units on disk; :class:`HUWindow` maps a window ``[lo, hi]`` HU to
  ``[0, 1]`` for the networks and back for writing.

Every problem with a file is a one-line :class:`~workbench.errors.DataError` naming the file.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from workbench.errors import DataError

__all__ = ["HUWindow", "read_volume", "write_volume", "to_ras", "read_dicom_series", "default_meta",
           "stack_to_volume", "volume_to_stack"]


def _nib():
    try:
        import nibabel
    except ImportError as e:  # pragma: no cover - the medical extra is missing
        raise ModuleNotFoundError("the medical domain needs the optional package 'nibabel', which is not installed: "
                                  "pip install 'workbench[medical]'", name="nibabel") from e
    return nibabel


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# -- the CT window ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HUWindow:
    """A CT intensity window: ``normalise`` maps ``[lo, hi]`` HU linearly to ``[0, 1]`` (values outside
    are clipped when ``clip``), ``denormalise`` maps back (no clipping). Default ``[-1000, 1000]``:
    air to dense bone, MONAI's ``ScaleIntensityRanged(a_min=-1000, a_max=1000)``."""

    lo: float = -1000.0
    hi: float = 1000.0
    clip: bool = True

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"HUWindow: need finite lo < hi, got [{self.lo}, {self.hi}]")

    @property
    def width(self) -> float:
        return float(self.hi) - float(self.lo)

    def normalise(self, hu: Any) -> Any:
        x = (hu - self.lo) / self.width
        if self.clip:
            x = x.clamp(0.0, 1.0) if torch.is_tensor(x) else np.clip(x, 0.0, 1.0)
        return x

    def denormalise(self, x: Any) -> Any:
        return x * self.width + self.lo

    def record(self) -> dict[str, Any]:
        return {"kind": "hu_window", "lo": float(self.lo), "hi": float(self.hi)}


# -- slice stacks ---------------------------------------------------------------------------------
def volume_to_stack(volume: torch.Tensor) -> torch.Tensor:
    """``[X, Y, Z]`` volume -> ``[Z, 1, Y, X]`` stack of axial slices: ``stack[k, 0, j, i] = volume[i, j, k]``
    (a permutation, no flip); the reference's batch of slices."""
    return volume.permute(2, 1, 0).unsqueeze(1).contiguous()


def stack_to_volume(stack: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`volume_to_stack`: ``[Z, 1, Y, X]`` (or ``[Z, Y, X]``) -> ``[X, Y, Z]``."""
    if stack.dim() == 4:
        if stack.shape[1] != 1:
            raise ValueError(f"stack_to_volume: expected [Z, 1, Y, X], got {tuple(stack.shape)}")
        stack = stack[:, 0]
    return stack.permute(2, 1, 0).contiguous()


def default_meta(spacing: Sequence[float] = (1.0, 1.0, 1.0), shape: Sequence[int] | None = None,
                 descrip: str = "workbench") -> dict[str, Any]:
    """A record for a generated volume: RAS+ axes, ``diag(spacing)`` affine centred on the volume."""
    aff = np.diag([float(s) for s in spacing] + [1.0])
    if shape is not None:
        aff[:3, 3] = -0.5 * (np.asarray(shape[:3], dtype=np.float64) - 1) * np.asarray(spacing, dtype=np.float64)
    return {"source": None, "affine": aff, "zooms": tuple(float(s) for s in spacing), "axcodes": "RAS",
            "dtype": "float32", "descrip": descrip, "shape": None if shape is None else tuple(int(s) for s in shape)}


# -- NIfTI ------------------------------------------------------------------------------------------
def _payload_size(path: Path) -> int:
    """Bytes of the (decompressed) file; reading it to the end also finds a truncated gzip stream."""
    if path.name.endswith(".gz"):
        n = 0
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                n += len(chunk)
        return n
    return path.stat().st_size


def read_volume(path: str | os.PathLike, *, allow_4d_single: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a 3-D NIfTI file (``.nii`` / ``.nii.gz``) with nibabel.

    Returns ``(volume, meta)``: the voxel values (scaled by the header's slope / intercept, e.g. HU
    for CT) as a float32 tensor ``[X, Y, Z]`` in the file's index order, and a record with
    ``source`` (the absolute path), ``affine`` (4x4 float64), ``zooms`` (voxel spacing, mm),
    ``axcodes`` (e.g. ``"RAS"``), ``dtype`` and ``descrip`` of the header, ``shape``,
    ``sform_code`` / ``qform_code`` and ``xyzt_units``.

    Raises :class:`DataError` (one line, naming the file) for a missing, truncated or corrupt file,
    a non-NIfTI file, an image that is not 3-D (2-D, or 4-D with more than one volume; a 4-D file
    with one volume is read as 3-D), header dimensions that do not match the stored data, and
    non-finite voxel values.
    """
    nib = _nib()
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds; all mean "not a readable NIfTI"
        raise DataError(f"not a readable NIfTI file ({_one_line(e)})", file=path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", file=path)
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1 and allow_4d_single:
        shape3 = shape[:3]
    elif len(shape) != 3:
        what = (f"a 4-D image with {shape[3]} volumes" if len(shape) == 4 else f"a {len(shape)}-D image")
        raise DataError(f"{what} of shape {'x'.join(map(str, shape))}, not a 3-D volume", file=path)
    else:
        shape3 = shape
    # the header's dims against what the file holds (nibabel reads a prefix of a longer payload silently)
    try:
        size = _payload_size(path)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"truncated or corrupt file ({_one_line(e)})", file=path) from None
    itemsize = np.dtype(hdr.get_data_dtype()).itemsize
    offset = int(getattr(img.dataobj, "offset", 0) or hdr.get_data_offset())   # the loaded header's vox_offset is 0
    expected = offset + int(np.prod(shape)) * itemsize
    # trailing bytes shorter than a slice are tolerated (padding); a slice's worth or more of extra
    # data means the dims do not describe the data
    slack = int(np.prod(shape[:2])) * itemsize
    if size < expected or size - expected >= slack:
        kind = "truncated: " if size < expected else "mislabelled: "
        raise DataError(f"{kind}the header's dims {'x'.join(map(str, shape))} ({hdr.get_data_dtype()}) describe "
                        f"{expected - offset} bytes of voxel data but the file holds {size - offset}", file=path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float64).reshape(shape3)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read the voxel data ({_one_line(e)})", file=path) from None
    bad = ~np.isfinite(data)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{int(bad.sum())} non-finite voxel value(s) (NaN or inf), the first at voxel {first}",
                        file=path)
    if np.abs(data).max(initial=0.0) > np.finfo(np.float32).max:
        raise DataError("voxel values beyond float32's range (±3.4e38)", file=path)
    aff = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DataError("the header's affine is singular or not finite (no voxel-to-world mapping)", file=path)
    descrip = hdr["descrip"].item() if "descrip" in hdr else b""
    meta = {
        "source": str(path.resolve()),
        "affine": aff,
        "zooms": tuple(float(z) for z in hdr.get_zooms()[:3]),
        "axcodes": "".join(nib.aff2axcodes(aff)),
        "dtype": str(hdr.get_data_dtype()),
        "descrip": descrip.decode("latin-1", "replace") if isinstance(descrip, bytes) else str(descrip),
        "shape": shape3,
        "sform_code": int(hdr["sform_code"]),
        "qform_code": int(hdr["qform_code"]),
        "xyzt_units": [str(u) for u in hdr.get_xyzt_units()],
    }
    return torch.from_numpy(data.astype(np.float32)), meta


def _same_file(a: Path, b: str | os.PathLike | None) -> bool:
    if not b:
        return False
    b = Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def write_volume(path: str | os.PathLike, volume: Any, meta: dict[str, Any] | None = None, *,
                 window: HUWindow | None = None, descrip: str | None = None) -> Path:
    """Write ``volume [X, Y, Z]`` as NIfTI-1 (``.nii`` or ``.nii.gz``, float32) with the record's affine
    and zooms (bit-exact on a round trip), atomically (a temporary file in the same folder, then
    rename). With ``window``, the values are first mapped back from ``[0, 1]`` to HU.

    Refuses (:class:`DataError`) to write over the file the record was read from (``meta["source"]``):
    outputs never replace inputs.
    """
    nib = _nib()
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"write_volume: the file name must end in .nii or .nii.gz, got {path.name}")
    meta = dict(meta or {})
    if _same_file(path, meta.get("source")):
        raise DataError("refusing to overwrite the input volume this record was read from; write to another "
                        "file", file=path)
    v = volume.detach().cpu().double().numpy() if torch.is_tensor(volume) else np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"write_volume: expected a volume [X, Y, Z], got shape {v.shape}")
    if window is not None:
        v = window.denormalise(v)
    aff = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    img = nib.Nifti1Image(v.astype(np.float32), aff)
    hdr = img.header
    hdr.set_data_dtype(np.float32)
    if meta.get("zooms") is not None:
        hdr.set_zooms(tuple(float(z) for z in meta["zooms"])[:3])
    img.set_sform(aff, code=int(meta.get("sform_code") or 1))   # 0 (unknown) would drop the affine: use 1
    img.set_qform(aff, code=int(meta.get("qform_code") or 1))
    units = meta.get("xyzt_units")
    hdr.set_xyzt_units(*(units if units and units[0] != "unknown" else ("mm", "sec")))
    text = descrip if descrip is not None else meta.get("descrip") or "workbench"
    hdr["descrip"] = text.encode("latin-1", "replace")[:79]
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def to_ras(volume: torch.Tensor, meta: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reorient ``volume [X, Y, Z]`` to RAS+ by axis flips / permutations only (no resampling), with the
    record's affine and zooms updated to match; a RAS volume is returned unchanged."""
    nib = _nib()
    from nibabel import orientations as ornt

    aff = np.asarray(meta["affine"], dtype=np.float64)
    cur = ornt.io_orientation(aff)
    target = ornt.axcodes2ornt("RAS")
    tr = ornt.ornt_transform(cur, target)
    if np.array_equal(tr, [[0, 1], [1, 1], [2, 1]]):
        return volume, dict(meta)
    arr = ornt.apply_orientation(volume.numpy(), tr)
    new_aff = aff @ ornt.inv_ornt_aff(tr, volume.shape)
    out = dict(meta)
    out["affine"] = new_aff
    perm = [int(tr[i, 0]) for i in range(3)]
    zooms = list(meta.get("zooms") or np.sqrt((aff[:3, :3] ** 2).sum(0)))
    new_zooms = [0.0] * 3
    for i in range(3):
        new_zooms[perm[i]] = zooms[i]
    out["zooms"] = tuple(float(z) for z in new_zooms)
    out["axcodes"] = "".join(nib.aff2axcodes(new_aff))
    out["shape"] = tuple(int(s) for s in arr.shape)
    return torch.from_numpy(np.ascontiguousarray(arr)), out


# -- DICOM -------------------------------------------------------------------------------------------
def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise ModuleNotFoundError("reading DICOM needs the optional package 'pydicom', which is not installed: "
                                  "pip install 'workbench[medical]' (or pip install pydicom)", name="pydicom") from e
    return pydicom


def read_dicom_series(source: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a DICOM series (a folder of ``.dcm`` files, or a list of files) as one volume.

    Slices are sorted by their position along the slice normal (``ImagePositionPatient`` projected on
    the cross product of the ``ImageOrientationPatient`` direction cosines), values are mapped with
    ``RescaleSlope`` / ``RescaleIntercept`` (HU for CT), and the affine is built from the position,
    orientation and ``PixelSpacing`` (slice step from the first and last positions, or
    ``SliceThickness`` for a single slice) and converted from DICOM's LPS to nibabel's RAS.
    Returns ``(volume [X, Y, Z] float32, meta)`` with the same record as :func:`read_volume`
    (``X`` = DICOM columns, ``Y`` = rows, ``Z`` = slices). Needs ``pydicom`` (a one-line
    ``ModuleNotFoundError`` saying what to install otherwise).
    """
    pydicom = _pydicom()
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if src.is_dir():
            files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            files = [src]
        label: Any = src
    else:
        files = [Path(p) for p in source]
        label = files[0].parent if files else "DICOM series"
    if not files:
        raise DataError("no DICOM files in the series", file=label)
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
            pix = ds.pixel_array
        except Exception as e:  # noqa: BLE001
            raise DataError(f"not a readable DICOM image ({_one_line(e)})", file=f) from None
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise DataError(f"missing the {key} tag (no geometry to place the slice)", file=f)
        if pix.ndim != 2:
            raise DataError(f"pixel data of shape {pix.shape}, expected one 2-D slice per file", file=f)
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append((f, ds, pix.astype(np.float64) * slope + inter))
    iop = np.asarray([float(v) for v in slices[0][1].ImageOrientationPatient], dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    shape0 = slices[0][2].shape
    for f, ds, pix in slices:
        if pix.shape != shape0:
            raise DataError(f"slice of shape {pix.shape} in a series of {shape0} slices", file=f)
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise DataError("ImageOrientationPatient differs from the series' first slice", file=f)
    pos = [float(np.dot(np.asarray([float(v) for v in ds.ImagePositionPatient]), normal)) for _, ds, _ in slices]
    order = np.argsort(pos, kind="stable")
    slices = [slices[i] for i in order]
    pos = [pos[i] for i in order]
    dup = [slices[i][0] for i in range(1, len(pos)) if abs(pos[i] - pos[i - 1]) < 1e-6]
    if dup:
        raise DataError(f"{len(dup)} slice(s) at the same position as another (two series mixed?), e.g. {dup[0]}",
                        file=label)
    first = slices[0][1]
    ps = [float(v) for v in first.PixelSpacing]   # (row spacing, column spacing)
    ipp0 = np.asarray([float(v) for v in first.ImagePositionPatient], dtype=np.float64)
    if len(slices) > 1:
        ipp1 = np.asarray([float(v) for v in slices[-1][1].ImagePositionPatient], dtype=np.float64)
        step = (ipp1 - ipp0) / (len(slices) - 1)
    else:
        step = normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * ps[1]   # voxel index i runs along the columns of the image (DICOM row direction)
    lps[:3, 1] = col_dir * ps[0]
    lps[:3, 2] = step
    lps[:3, 3] = ipp0
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps   # LPS -> RAS
    vol = np.stack([pix.T for _, _, pix in slices], axis=-1)   # [cols, rows, slices] = [X, Y, Z]
    if not np.isfinite(vol).all():
        raise DataError("non-finite values after RescaleSlope / RescaleIntercept", file=label)
    nib = _nib()
    meta = {
        "source": str(Path(label).resolve()) if not isinstance(label, str) else label,
        "affine": aff,
        "zooms": (ps[1], ps[0], float(np.linalg.norm(step))),
        "axcodes": "".join(nib.aff2axcodes(aff)),
        "dtype": str(slices[0][1].pixel_array.dtype),
        "descrip": f"{getattr(first, 'Modality', 'DICOM')} series of {len(slices)} slice(s)",
        "shape": tuple(int(s) for s in vol.shape),
        "sform_code": 1, "qform_code": 1, "xyzt_units": ["mm", "sec"],
        "modality": str(getattr(first, "Modality", "")),
        "files": [str(f) for f, _, _ in slices],
    }
    return torch.from_numpy(vol.astype(np.float32)), meta

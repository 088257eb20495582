"""The datamodule of the medical domain: volumes as stacks of axial slices for a 2-D slice prior
(DiffusionMBIR's layout), and the inverse tasks on held-out volumes.

Layout (see README.md): a NIfTI volume ``[X, Y, Z]`` in RAS+ becomes the stack ``[Z, 1, Y, X]``
(``stack[k, 0, j, i] = volume[i, j, k]``, :func:`~.io.volume_to_stack`): axial slices along Z, the
reference's "volume as a batch of slices". Training items are single slices ``{"x": [1, H, W]}`` in
``[0, 1]`` (CT: the HU window mapped to [0, 1]; MRI: divided by the volume's maximum).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.data import DomainDataModule, data_root, save_tensors
from workbench.errors import ConfigError, DataError, check_int, check_number

from .io import HUWindow, default_meta, read_volume, stack_to_volume, to_ras, volume_to_stack, write_volume
from .phantoms import random_ellipsoid_phantom, shepp_logan_3d

__all__ = ["VolumeDataModule", "SliceDataset", "TASKS", "MNI_T1", "build_operator", "resample_volume"]

#: the inverse tasks of DiffusionMBIR: sparse-view CT, limited-angle CT, compressed-sensing MRI
TASKS = ("sv_ct", "la_ct", "cs_mri")
#: the default NIfTI volume (``$WORKBENCH_DATA/medical/``): the MNI152 2009a T1 template (nilearn)
MNI_T1 = "medical/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


class SliceDataset(Dataset):
    """Axial slices ``[N, 1, H, W]`` as items ``{"x": [1, H, W]}``."""

    def __init__(self, slices: torch.Tensor) -> None:
        self.slices = slices.float().contiguous()

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.slices[i]}


def resample_volume(volume: torch.Tensor, meta: dict[str, Any], shape: tuple[int, int, int]) -> tuple[torch.Tensor, dict]:
    """Area-average ``volume [X, Y, Z]`` to ``shape`` (adaptive average pooling; antialiased when shrinking)
    with the affine and zooms updated: new voxel centre ``i'`` sits at old index ``(i' + 1/2) s - 1/2``,
    ``s = old / new`` per axis. (Enlarging an axis uses trilinear interpolation with the same mapping.)"""
    old = np.asarray(volume.shape, dtype=np.float64)
    new = np.asarray(shape, dtype=np.float64)
    v = volume[None, None].double()
    if (new <= old).all():
        out = torch.nn.functional.adaptive_avg_pool3d(v, tuple(int(s) for s in shape))
    else:
        out = torch.nn.functional.interpolate(v, size=tuple(int(s) for s in shape), mode="trilinear",
                                              align_corners=False)
    s = old / new
    m = np.diag(list(s) + [1.0])
    m[:3, 3] = 0.5 * s - 0.5
    # NIfTI-1 stores the affine in float32: round it here, so the affine in memory is the one a
    # written file reads back bit for bit
    aff = (np.asarray(meta["affine"], dtype=np.float64) @ m).astype(np.float32).astype(np.float64)
    rec = dict(meta)
    rec["affine"] = aff
    rec["zooms"] = tuple(float(z) for z in np.sqrt((aff[:3, :3] ** 2).sum(0)))
    rec["shape"] = tuple(int(x) for x in shape)
    return out[0, 0].float(), rec


def build_operator(task: str, image_size: int, *, n_views: int = 8, arc: float = 90.0, angle_step: float = 1.0,
                   n_detectors: int | None = None, mask_kind: str = "uniform1d", acceleration: float = 4.0,
                   center_fraction: float = 0.08, mask_seed: int = 0, noise_std: float = 0.0) -> Any:
    """The forward operator of a task on ``[B, 1, H, W]`` slices: ``sv_ct`` (``n_views`` parallel-beam
    views over 180 degrees, :func:`workbench.operators.sparse_view_angles`), ``la_ct`` (views every
    ``angle_step`` degrees over ``[0, arc)``, :func:`~workbench.operators.limited_angle_angles`), ``cs_mri``
    (single-coil Cartesian k-space, :class:`~workbench.operators.FourierSubsample`, under one
    :func:`~workbench.operators.mri_mask` of ``mask_kind`` shared by every slice). Imported when used."""
    if task not in TASKS:
        raise ConfigError(f"config key 'datamodule.task' must be one of {list(TASKS)} (or null), got {task!r}")
    try:
        from workbench import operators
        if task == "cs_mri":
            from workbench.operators import FourierSubsample, mri_mask
        else:
            from workbench.operators import ParallelBeamCT, limited_angle_angles, sparse_view_angles
    except ImportError as e:
        raise ConfigError(f"config key 'datamodule.task'={task} needs an operator this installation's "
                          f"workbench.operators lacks ({e}; it has {sorted(operators.__all__)})") from None
    if task == "cs_mri":
        try:
            mask = mri_mask(mask_kind, (image_size, image_size), acceleration, center_fraction, mask_seed)
        except ValueError as e:
            raise ConfigError(f"config key 'datamodule.mask_kind': {e}") from None
        return FourierSubsample(mask, noise_std=float(noise_std))
    angles = sparse_view_angles(n_views) if task == "sv_ct" else limited_angle_angles(arc=arc, step=angle_step)
    return ParallelBeamCT(image_size, angles, n_detectors=n_detectors, noise_std=float(noise_std))


class VolumeDataModule(DomainDataModule):
    """3-D volumes as stacks of 2-D axial slices, for a slice-wise prior and its inverse tasks.

    Args:
        source: ``"phantom"`` (default, embedded: ``n_train`` + ``n_test`` procedurally generated heads,
            volume i from seed ``gen_seed + i``) or ``"nifti"`` (one volume file, ``path`` or the MNI152 T1
            template under ``$WORKBENCH_DATA/medical/``; its central ``test_slices`` slices are the
            test volume and the prior trains on the other slices of the **same volume**: an in-volume
            split, not held-out subjects).
        modality: ``"ct"`` (values in HU, normalised by the window ``[window_lo, window_hi]``) or
            ``"mri"`` (divided by the volume's maximum, as the reference does).
        phantom: ``"shepp_logan"`` (the 3-D Shepp-Logan head with seeded variation ``jitter``) or
            ``"ellipsoids"`` (random ellipsoids in a head).
        image_size: slices are ``image_size x image_size``; ``n_slices``: slices per phantom volume
            (``nifti``: null keeps the in-plane scale along z).
        task, n_views, arc, angle_step, n_detectors, mask_kind, acceleration, center_fraction,
            mask_seed, noise_std: the inverse task of :meth:`observations` (see :func:`build_operator`).
    """

    def __init__(self, source: str = "phantom", modality: str = "ct", phantom: str = "shepp_logan",
                 image_size: int = 64, n_slices: int | None = 32, n_train: int = 8, n_test: int = 1,
                 gen_seed: int = 0, jitter: float = 1.0, path: str | None = None, test_slices: int = 32,
                 window_lo: float = -1000.0, window_hi: float = 1000.0, task: str | None = None,
                 n_views: int = 8, arc: float = 90.0, angle_step: float = 1.0, n_detectors: int | None = None,
                 mask_kind: str = "uniform1d", acceleration: float = 4.0, center_fraction: float = 0.08,
                 mask_seed: int = 0, noise_std: float = 0.0, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        for key, value, allowed in (("source", source, ("phantom", "nifti")), ("modality", modality, ("ct", "mri")),
                                    ("phantom", phantom, ("shepp_logan", "ellipsoids"))):
            if value not in allowed:
                raise ConfigError(f"config key 'datamodule.{key}' must be one of {list(allowed)}, got {value!r}")
        if task is not None and task not in TASKS:
            raise ConfigError(f"config key 'datamodule.task' must be one of {list(TASKS)} or null, got {task!r}")
        self.source, self.modality, self.phantom, self.task = source, modality, phantom, task
        self.image_size = check_int(image_size, "datamodule.image_size", minimum=8)
        self.n_slices = check_int(n_slices, "datamodule.n_slices", minimum=3, allow_none=True)
        if source == "phantom" and self.n_slices is None:
            raise ConfigError("config key 'datamodule.n_slices' must be set for source=phantom")
        self.n_train = check_int(n_train, "datamodule.n_train", minimum=1)
        self.n_test = check_int(n_test, "datamodule.n_test", minimum=1)
        self.gen_seed = check_int(gen_seed, "datamodule.gen_seed")
        self.jitter = check_number(jitter, "datamodule.jitter", minimum=0.0)
        self.path = path
        self.test_slices = check_int(test_slices, "datamodule.test_slices", minimum=3)
        lo = check_number(window_lo, "datamodule.window_lo")
        hi = check_number(window_hi, "datamodule.window_hi")
        if hi <= lo:
            raise ConfigError(f"config key 'datamodule.window_hi' must be > window_lo ({lo:g}), got {hi:g}")
        self.window = HUWindow(lo, hi)
        self.op_kwargs = {
            "n_views": check_int(n_views, "datamodule.n_views", minimum=1),
            "arc": check_number(arc, "datamodule.arc", minimum=0.0, maximum=360.0, exclusive_minimum=True),
            "angle_step": check_number(angle_step, "datamodule.angle_step", minimum=0.0, exclusive_minimum=True),
            "n_detectors": check_int(n_detectors, "datamodule.n_detectors", minimum=1, allow_none=True),
            "mask_kind": str(mask_kind),
            "acceleration": check_number(acceleration, "datamodule.acceleration", minimum=1.0),
            "center_fraction": check_number(center_fraction, "datamodule.center_fraction", minimum=0.0, maximum=1.0),
            "mask_seed": check_int(mask_seed, "datamodule.mask_seed"),
            "noise_std": check_number(noise_std, "datamodule.noise_std", minimum=0.0),
        }
        self.train_volumes: list[dict[str, Any]] = []
        self.test_volumes: list[dict[str, Any]] = []
        self._observed: list[tuple[int, Any, torch.Tensor]] = []

    # -- volumes -------------------------------------------------------------------------------------
    def file(self) -> Path:
        """The NIfTI volume read with ``source="nifti"``."""
        return Path(self.path) if self.path else data_root() / MNI_T1

    def _normalise(self, values: torch.Tensor, where: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.modality == "ct":
            return self.window.normalise(values), self.window.record()
        peak = float(values.max())
        if peak <= 0:
            raise DataError("the volume's maximum is <= 0: nothing to normalise to [0, 1] (modality=mri)", file=where)
        return values / peak, {"kind": "scale", "lo": 0.0, "hi": peak}

    def _phantom_volume(self, seed: int) -> dict[str, Any]:
        size = (self.n_slices, self.image_size, self.image_size)
        if self.phantom == "shepp_logan":
            stack = shepp_logan_3d(size, self.modality, seed=seed, jitter=self.jitter)
        else:
            stack = random_ellipsoid_phantom(size, self.modality, seed=seed)
        x, intensity = self._normalise(stack, f"phantom {seed}")
        shape = (self.image_size, self.image_size, self.n_slices)          # [X, Y, Z]
        meta = default_meta(spacing=tuple(200.0 / s for s in shape), shape=shape,
                            descrip=f"workbench {self.phantom} phantom seed {seed}")
        return {"stack": x.unsqueeze(1), "meta": meta, "intensity": intensity, "name": f"{self.phantom}_{seed}"}

    def _nifti_volumes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.file()
        if not path.exists():
            raise FileNotFoundError(f"NIfTI volume not found: {path} (set WORKBENCH_DATA to the folder holding "
                                    f"'{MNI_T1}', or datamodule.path, or use datamodule.source=phantom)")
        vol, meta = read_volume(path)
        vol, meta = to_ras(vol, meta)
        X, Y, Z = vol.shape
        nz = self.n_slices or max(3, round(Z * self.image_size / X))
        vol, meta = resample_volume(vol, meta, (self.image_size, self.image_size, nz))
        if nz < self.test_slices + 1:
            raise DataError(f"{nz} slices after resampling: need more than test_slices={self.test_slices} (the test "
                            "block) to leave slices for training; lower datamodule.test_slices", file=path)
        x, intensity = self._normalise(vol, path)
        stack = volume_to_stack(x)
        lo = (nz - self.test_slices) // 2
        hi = lo + self.test_slices
        test_meta = dict(meta)
        test_meta["affine"] = meta["affine"] @ _shift_z(lo)
        test_meta["shape"] = (self.image_size, self.image_size, self.test_slices)
        test = {"stack": stack[lo:hi], "meta": test_meta, "intensity": intensity, "name": f"{path.name}[{lo}:{hi}]"}
        train = {"stack": torch.cat([stack[:lo], stack[hi:]]), "meta": meta, "intensity": intensity,
                 "name": f"{path.name} outside [{lo}:{hi}]"}
        return [train], [test]

    def setup(self, stage: str | None = None) -> None:
        if self.train_volumes:
            return
        if self.source == "phantom":
            self.train_volumes = [self._phantom_volume(self.gen_seed + i) for i in range(self.n_train)]
            self.test_volumes = [self._phantom_volume(self.gen_seed + self.n_train + i) for i in range(self.n_test)]
            what = f"{self.phantom} phantoms ({self.modality})"
        else:
            self.train_volumes, self.test_volumes = self._nifti_volumes()
            what = f"{self.file()} (in-volume split: central {self.test_slices} slices for test)"
        train = torch.cat([v["stack"] for v in self.train_volumes])
        test = torch.cat([v["stack"] for v in self.test_volumes])
        self.train_set = SliceDataset(train)
        self.test_set = SliceDataset(test)
        self.val_set = SliceDataset(test[: min(len(test), 2 * self.batch_size)])
        print(f"workbench: {what}: {len(train)} training / {len(test)} test slices of "
              f"{self.image_size}x{self.image_size}", file=sys.stderr)

    # -- what the core asks ------------------------------------------------------------------------------
    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``n`` zero slices ``[n, 1, H, W]`` (unconditional samples are independent axial slices)."""
        return {"x": torch.zeros(n, 1, self.image_size, self.image_size)}

    def reference(self) -> torch.Tensor:
        """The test slices ``[N, 1, H, W]`` in [0, 1]."""
        self.setup()
        return self.test_set.slices

    def operator(self) -> Any:
        """The forward operator of ``task`` (:func:`build_operator`)."""
        if self.task is None:
            raise ConfigError("config key 'datamodule.task' is null: set it to one of "
                              f"{list(TASKS)} for conditional sampling (guidance=...)")
        return build_operator(self.task, self.image_size, **self.op_kwargs)

    def observations(self, n: int, batch_size: int) -> Iterator[dict[str, Any]]:
        """One test volume per batch, ``min(n, n_test)`` volumes: ``{"x": volume [Z, 1, H, W],
        "observation": {"y": A(volume) (+ noise), "operator": A}, "meta": one record per slice}``.
        ``batch_size`` is not used: a volume is not split (its slices are coupled by the z-direction
        regulariser of DiffusionMBIR); a method chunks the slices through its network itself."""
        self.setup()
        op = self.operator()
        self._observed = []
        for i, vol in enumerate(self.test_volumes[: max(1, min(int(n), len(self.test_volumes)))]):
            x = vol["stack"]
            with torch.no_grad():
                y = op.forward(x)
                std = float(getattr(op, "noise_std", 0.0) or 0.0)
                if std > 0:
                    g = torch.Generator().manual_seed(self.seed * 7919 + i)
                    noise = torch.randn(y.shape, generator=g, dtype=y.real.dtype)
                    if y.is_complex():
                        noise = torch.complex(noise, torch.randn(y.shape, generator=g, dtype=y.real.dtype)) / math.sqrt(2)
                    y = y + std * noise
            self._observed.append((x.shape[0], op, y))
            yield {"x": x, "observation": {"y": y, "operator": op}, "meta": self._slice_records(i, vol)}

    def _slice_records(self, index: int, vol: dict[str, Any]) -> list[dict[str, Any]]:
        meta = vol["meta"]
        z = vol["stack"].shape[0]
        common = {"volume": index, "name": vol["name"], "n_slices": z, "affine": np.asarray(meta["affine"]).tolist(),
                  "zooms": list(meta["zooms"]), "axcodes": meta["axcodes"], "intensity": dict(vol["intensity"]),
                  "source": meta.get("source"), "task": self.task}
        return [dict(common, slice=k) for k in range(z)]

    def conditional_metrics(self, mean: torch.Tensor, truth: torch.Tensor, samples: torch.Tensor) -> dict[str, float]:
        """Over the observed test volumes (averaged): PSNR / SSIM of the posterior mean on the three views
        (:func:`~.metrics.volume_metrics`, data range 1 in the normalised units), the data residual
        ``||A mean - y|| / ||y||`` of each volume's own measurement, and the core's RMSE / MAE / coverage /
        mean posterior std (:func:`workbench.conditional.default_metrics`)."""
        from workbench.conditional import default_metrics

        from .metrics import volume_metrics

        out = dict(default_metrics(mean, truth, samples))
        sizes = [z for z, _, _ in self._observed]
        if sum(sizes) != len(truth):
            raise ConfigError(f"{type(self).__name__}.conditional_metrics: {len(truth)} slices scored but the last "
                              f"observations() yielded volumes of {sizes} slices; call it on those observations")
        per: list[dict[str, float]] = []
        start = 0
        for z, op, y in self._observed:
            m, t = mean[start:start + z].float(), truth[start:start + z].float()
            rec = volume_metrics(m, t, data_range=1.0)
            with torch.no_grad():
                r = op.forward(m.to(y.device)) - y
            rec["data_residual"] = float(torch.linalg.vector_norm(r) / torch.linalg.vector_norm(y).clamp_min(1e-12))
            per.append(rec)
            start += z
        for k in per[0]:
            out[k] = float(np.mean([p[k] for p in per]))
        out["posterior_std"] = out["mean_std"]
        return out

    def save_samples(self, samples: torch.Tensor, directory: str | os.PathLike, meta: list[Any] | None = None,
                     kind: str | None = None) -> list[Path]:
        """NIfTI files in physical units (HU for CT) and ``samples.pt``.

        With ``meta`` (the per-slice records of :meth:`observations`): one ``.nii.gz`` per volume (and per
        posterior sample, ``volume000_sample03.nii.gz``, when the records repeat) with the input's affine,
        slices placed by their record. ``kind="std"`` (default: when the folder is named ``std``, as the
        CLI writes the posterior std) scales by the window width without the offset: a spread in HU.
        Without ``meta`` (unconditional slices): ``samples.nii.gz``, the slices stacked along z.
        """
        out = Path(directory)
        kind = kind or ("std" if out.name == "std" else "value")
        save_tensors(out / "samples.pt", samples)
        files = [out / "samples.pt"]
        x = samples.detach().cpu().float()
        if meta is None:
            self.setup()
            ref = self.train_volumes[0]
            rec = dict(ref["meta"], source=None, shape=None)
            stack = _to_physical(x, ref["intensity"], kind)
            files.append(write_volume(out / "samples.nii.gz", stack_to_volume(stack), rec,
                                      descrip="workbench slice-prior samples"))
            return files
        if len(meta) != len(x):
            raise ConfigError(f"save_samples: {len(x)} samples but {len(meta)} metadata records")
        groups: dict[tuple[int, int], dict[int, int]] = {}
        seen: dict[tuple[int, int], int] = {}
        for i, m in enumerate(meta):
            key = (int(m["volume"]), int(m["slice"]))
            s = seen.get(key, 0)
            seen[key] = s + 1
            groups.setdefault((key[0], s), {})[key[1]] = i
        many = any(s > 0 for (_, s) in groups)
        for (v, s), idx in sorted(groups.items()):
            rec0 = meta[next(iter(idx.values()))]
            z = int(rec0["n_slices"])
            if sorted(idx) != list(range(z)):
                raise ConfigError(f"save_samples: volume {v} sample {s} has slices {sorted(idx)[:5]}..., not all {z}")
            stack = _to_physical(x[[idx[k] for k in range(z)]], rec0["intensity"], kind)
            rec = {"affine": np.asarray(rec0["affine"]), "zooms": tuple(rec0["zooms"]), "source": rec0.get("source")}
            name = f"volume{v:03d}" + (f"_sample{s:02d}" if many else "") + ".nii.gz"
            files.append(write_volume(out / name, stack_to_volume(stack), rec,
                                      descrip=f"workbench {kind} {rec0.get('task') or ''}".strip()))
        return files

    def plot_samples(self, samples: torch.Tensor, path: str | os.PathLike) -> Path:
        """Three orthogonal views (central axial, coronal, sagittal slices): of the first posterior sample
        of the first observed volume next to its truth, or (unconditional slices) a row of generated
        axial slices under the test volume's views."""
        from .plots import plot_samples

        self.setup()
        truth = self.test_volumes[0]["stack"]
        x = samples.detach().cpu().float()
        total = sum(z for z, _, _ in self._observed)
        if self._observed and total and len(x) % total == 0:
            s = len(x) // total
            z = self._observed[0][0]
            volume = x.reshape(total, s, *x.shape[1:])[:z, 0]
            return plot_samples(path, truth=truth, volume=volume, zooms=self.test_volumes[0]["meta"]["zooms"])
        return plot_samples(path, truth=truth, slices=x, zooms=self.test_volumes[0]["meta"]["zooms"])


def _shift_z(k: int) -> np.ndarray:
    m = np.eye(4)
    m[2, 3] = float(k)
    return m


def _to_physical(x: torch.Tensor, intensity: dict[str, Any], kind: str) -> torch.Tensor:
    lo, hi = float(intensity["lo"]), float(intensity["hi"])
    return x * (hi - lo) if kind == "std" else x * (hi - lo) + lo

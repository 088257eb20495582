"""Procedural 3-D phantoms: the embedded data of the medical domain (no download).

Volumes are returned as slice stacks ``[Z, H, W]`` (axial slice k is ``volume[k]``; H runs along
y, W along x, both increasing as in RAS+); see
:func:`workbench.domains.medical.io.stack_to_volume` for the ``[X, Y, Z]`` NIfTI order. Coordinates
span ``[-1, 1]`` on every axis.

* :func:`shepp_logan_3d`: the 3-D Shepp-Logan head (Kak & Slaney's ellipsoids, as in Matlab's
  ``phantom3d`` "modified" table), painted with tissue values (each ellipsoid *sets* its value,
  later ones on top), optionally with a seeded random variation of centres, semi-axes, rotation and
  intensities (``jitter``).
* :func:`random_ellipsoid_phantom`: a head (skull shell + brain) holding ``n_ellipsoids`` random
  ellipsoids.

``modality="ct"`` gives Hounsfield-like values (air -1000, soft tissue 20-80, CSF ~10, bone 800);
``modality="mri"`` a T1-like contrast in ``[0, 1]`` (scalp / fat bright, bone dark, CSF dark, white
matter brighter than grey). All randomness comes from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["SHEPP_LOGAN_3D", "TISSUES", "shepp_logan_3d", "random_ellipsoid_phantom", "paint_ellipsoids",
           "background"]

#: Kak & Slaney's 3-D Shepp-Logan ellipsoids: (a, b, c) semi-axes along (x, y, z), centre (x0, y0, z0),
#: rotation phi about z in degrees; and the tissue each one paints
SHEPP_LOGAN_3D = [
    # a      b      c      x0     y0      z0     phi   tissue
    (0.690, 0.920, 0.810, 0.00, 0.000, 0.00, 0.0, "bone"),
    (0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0, "grey"),
    (0.110, 0.310, 0.220, 0.22, 0.000, 0.00, -18.0, "csf"),
    (0.160, 0.410, 0.280, -0.22, 0.000, 0.00, 18.0, "csf"),
    (0.210, 0.250, 0.410, 0.00, 0.350, -0.15, 0.0, "white"),
    (0.046, 0.046, 0.050, 0.00, 0.100, 0.25, 0.0, "lesion"),
    (0.046, 0.046, 0.050, 0.00, -0.100, 0.25, 0.0, "lesion"),
    (0.046, 0.023, 0.050, -0.08, -0.605, 0.00, 0.0, "lesion2"),
    (0.023, 0.023, 0.020, 0.00, -0.606, 0.00, 0.0, "lesion2"),
    (0.023, 0.046, 0.020, 0.06, -0.605, 0.00, 0.0, "lesion2"),
]

#: tissue values per modality: CT in HU, MRI a T1-like contrast in [0, 1]
TISSUES = {
    "ct": {"air": -1000.0, "bone": 800.0, "grey": 40.0, "white": 25.0, "csf": 8.0, "lesion": 70.0,
           "lesion2": 55.0, "fat": -90.0},
    "mri": {"air": 0.0, "bone": 0.12, "grey": 0.55, "white": 0.75, "csf": 0.15, "lesion": 0.95,
            "lesion2": 0.35, "fat": 0.9},
}


def background(modality: str) -> float:
    return TISSUES[_modality(modality)]["air"]


def _modality(modality: str) -> str:
    if modality not in TISSUES:
        raise ValueError(f"modality must be one of {sorted(TISSUES)}, got {modality!r}")
    return modality


def _grid(size: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, h, w = (int(s) for s in size)
    if min(z, h, w) < 1:
        raise ValueError(f"phantom size must be positive, got {tuple(size)}")

    def axis(n: int) -> np.ndarray:
        return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)

    zz, yy, xx = np.meshgrid(axis(z), axis(h), axis(w), indexing="ij")
    return xx, yy, zz


def _rotation(phi: float, theta: float = 0.0, psi: float = 0.0) -> np.ndarray:
    """z-x-z Euler rotation (degrees)."""
    p, t, s = np.deg2rad([phi, theta, psi])
    rz1 = np.array([[np.cos(p), -np.sin(p), 0], [np.sin(p), np.cos(p), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    rz2 = np.array([[np.cos(s), -np.sin(s), 0], [np.sin(s), np.cos(s), 0], [0, 0, 1]])
    return rz1 @ rx @ rz2


def paint_ellipsoids(size: Sequence[int], ellipsoids: Sequence[dict], fill: float,
                     global_rotation: np.ndarray | None = None) -> np.ndarray:
    """A ``[Z, H, W]`` float64 volume filled with ``fill`` where each ellipsoid
    ``{"axes": (a, b, c), "centre": (x0, y0, z0), "angles": (phi, theta, psi), "value": v}`` sets its
    value, in order (later ones on top)."""
    xx, yy, zz = _grid(size)
    pts = np.stack([xx, yy, zz], -1)
    if global_rotation is not None:
        pts = pts @ global_rotation   # rotate the coordinates: the whole head turns by R^T
    vol = np.full(xx.shape, float(fill))
    for e in ellipsoids:
        r = _rotation(*e.get("angles", (0.0, 0.0, 0.0)))
        q = (pts - np.asarray(e["centre"], dtype=np.float64)) @ r   # body coordinates
        inside = ((q / np.asarray(e["axes"], dtype=np.float64)) ** 2).sum(-1) <= 1.0
        vol[inside] = float(e["value"])
    return vol


def shepp_logan_3d(size: Sequence[int] = (32, 64, 64), modality: str = "ct", seed: int | None = None,
                   jitter: float = 1.0) -> torch.Tensor:
    """The 3-D Shepp-Logan head ``[Z, H, W]`` (float32; HU for ``"ct"``, ``[0, 1]`` for ``"mri"``).

    ``seed=None`` (or ``jitter=0``) gives the canonical phantom; a seed draws a variation: centres
    moved by up to ``0.04 * jitter``, semi-axes scaled by ``1 +- 0.12 * jitter``, each ellipsoid turned by
    up to ``12 * jitter`` degrees about z, the whole head by up to ``8 * jitter`` degrees about each
    axis, and tissue values scaled by ``1 +- 0.1 * jitter`` (CT: of their offset from water, 0 HU).
    The same seed gives the same volume.
    """
    tissues = TISSUES[_modality(modality)]
    rng = np.random.default_rng(seed) if seed is not None and jitter > 0 else None
    ellipsoids = []
    values = dict(tissues)
    if rng is not None:
        values = {k: (v if k == "air" else v * (1 + 0.1 * jitter * rng.uniform(-1, 1))) for k, v in tissues.items()}
    for i, (a, b, c, x0, y0, z0, phi, tissue) in enumerate(SHEPP_LOGAN_3D):
        axes, centre, ang = np.array([a, b, c]), np.array([x0, y0, z0]), phi
        if rng is not None:
            axes = axes * (1 + 0.12 * jitter * rng.uniform(-1, 1, 3))
            centre = centre + 0.04 * jitter * rng.uniform(-1, 1, 3)
            if i >= 2:   # the skull and brain stay concentric ellipsoids: the inner ones move
                ang = phi + 12.0 * jitter * rng.uniform(-1, 1)
            else:
                centre = np.zeros(3) if i == 0 else centre
        if i == 1 and rng is not None:   # keep the brain inside the skull: a shell of at least ~4 %
            outer = ellipsoids[0]["axes"]
            axes = np.minimum(axes, np.asarray(outer) * 0.95)
            centre = np.clip(centre, -0.01, 0.01)
        ellipsoids.append({"axes": tuple(axes), "centre": tuple(centre), "angles": (ang, 0.0, 0.0),
                           "value": values[tissue]})
    rot = None
    if rng is not None:
        rot = _rotation(*(8.0 * jitter * rng.uniform(-1, 1, 3)))
    return torch.from_numpy(paint_ellipsoids(size, ellipsoids, tissues["air"], rot).astype(np.float32))


def random_ellipsoid_phantom(size: Sequence[int] = (32, 64, 64), modality: str = "ct", seed: int = 0,
                             n_ellipsoids: int = 8) -> torch.Tensor:
    """A random head ``[Z, H, W]``: an ellipsoidal skull shell and brain with random semi-axes, then
    ``n_ellipsoids`` random ellipsoids (random tissue, centre inside the brain, semi-axes 0.05-0.3,
    random orientation) painted inside the brain (clipped to it). Seeded and reproducible."""
    tissues = TISSUES[_modality(modality)]
    rng = np.random.default_rng(seed)
    outer = np.array([0.72, 0.9, 0.82]) * (1 + 0.08 * rng.uniform(-1, 1, 3))
    inner = outer * rng.uniform(0.88, 0.93)
    head = [{"axes": tuple(outer), "centre": (0, 0, 0), "angles": (0, 0, 0), "value": tissues["bone"]},
            {"axes": tuple(inner), "centre": (0, 0, 0), "angles": (0, 0, 0), "value": tissues["grey"]}]
    inside = [k for k in tissues if k not in ("air", "bone", "grey")]
    blobs = []
    for _ in range(int(n_ellipsoids)):
        centre = rng.uniform(-0.6, 0.6, 3) * inner
        blobs.append({"axes": tuple(rng.uniform(0.05, 0.3, 3)), "centre": tuple(centre),
                      "angles": tuple(rng.uniform(0, 180, 3)), "value": tissues[inside[rng.integers(len(inside))]]})
    vol = paint_ellipsoids(size, head + blobs, tissues["air"])
    brain = paint_ellipsoids(size, [dict(head[1], value=1.0)], 0.0) > 0.5
    shell = paint_ellipsoids(size, head, tissues["air"])
    vol = np.where(brain, vol, shell)   # the blobs stay inside the brain
    return torch.from_numpy(vol.astype(np.float32))

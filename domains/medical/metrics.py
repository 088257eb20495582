"""Metrics of the medical domain.

* :func:`volume_metrics`: PSNR and SSIM of a reconstructed volume on its **axial, coronal and
  sagittal** views, as DiffusionMBIR reports them (Chung et al. 2023, Tables 1-3): ``skimage.metrics``
  ``peak_signal_noise_ratio`` / ``structural_similarity`` per 2-D slice with the given
  ``data_range``, averaged over the slices of each view. Volumes are slice stacks ``[Z, H, W]``
  (``[Z, 1, H, W]`` is accepted): axial slices are ``v[k]``, coronal ``v[:, j]`` (constant y),
  sagittal ``v[:, :, i]`` (constant x). Values are scored as given (no clipping).
* :func:`slice_metrics`: unconditional samples of the slice prior against reference slices
  (intensity statistics and histogram distance).

A slice reproduced exactly has an infinite PSNR (and SSIM 1): it is left out of that view's PSNR mean
(e.g. an all-air end slice that FBP returns as exact zeros would otherwise make the mean ``inf``); a
view whose slices are all exact has PSNR ``inf``. SSIM averages over every slice.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["VIEWS", "volume_metrics", "view_slices", "slice_metrics"]

#: view name -> the axis of the ``[Z, H, W]`` stack its slices are taken along
VIEWS = {"axial": 0, "coronal": 1, "sagittal": 2}


def _skimage_metrics():
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError as e:  # pragma: no cover
        raise ModuleNotFoundError("volume metrics need the optional package 'scikit-image', which is not installed: "
                                  "pip install 'workbench[medical]'", name="skimage") from e
    return peak_signal_noise_ratio, structural_similarity


def _as_stack(v: Any) -> np.ndarray:
    a = v.detach().cpu().double().numpy() if torch.is_tensor(v) else np.asarray(v, dtype=np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"expected a volume [Z, H, W] or [Z, 1, H, W], got shape {a.shape}")
    return a


def view_slices(volume: Any, view: str) -> np.ndarray:
    """The 2-D slices of one view, stacked on axis 0: axial ``[Z, H, W]``, coronal ``[H, Z, W]``,
    sagittal ``[W, Z, H]``."""
    return np.moveaxis(_as_stack(volume), VIEWS[view], 0)


def _ssim_window(shape: tuple[int, int]) -> int:
    """skimage's default 7, or the largest odd size that fits a small slice (at least 3)."""
    m = min(shape)
    return 7 if m >= 7 else max(3, m if m % 2 else m - 1)


def volume_metrics(pred: Any, truth: Any, data_range: float = 1.0) -> dict[str, float]:
    """``psnr_{axial,coronal,sagittal}`` and ``ssim_{...}`` of ``pred`` against ``truth`` (both ``[Z, H, W]``),
    each the mean over that view's slices of skimage's per-slice value with ``data_range``.

    Slices whose truth is constant (all air, say, at the ends of a phantom) are left out of both
    means (when a view has any other slice): a method that keeps them near zero would score
    ~150 dB there and dominate the mean (a zero-filled MRI read 41.7 dB coronal against 17.4 dB
    over the other slices). PSNR is also taken over the slices not reproduced exactly (``inf``
    when all are)."""
    psnr, ssim = _skimage_metrics()
    p, t = _as_stack(pred), _as_stack(truth)
    if p.shape != t.shape:
        raise ValueError(f"volume_metrics: prediction {p.shape} and truth {t.shape} differ in shape")
    if min(p.shape) < 3:
        raise ValueError(f"volume_metrics: every axis needs at least 3 voxels for SSIM, got {p.shape}")
    out: dict[str, float] = {}
    for view, axis in VIEWS.items():
        ps, ts = np.moveaxis(p, axis, 0), np.moveaxis(t, axis, 0)
        flat = ts.reshape(len(ts), -1)
        keep = flat.max(1) > flat.min(1)
        if keep.any():
            ps, ts = ps[keep], ts[keep]
        win = _ssim_window(ps.shape[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # divide by zero: identical slices, PSNR inf
            vals = np.asarray([psnr(b, a, data_range=data_range) for a, b in zip(ps, ts)])
        finite = np.isfinite(vals)
        out[f"psnr_{view}"] = float(vals[finite].mean()) if finite.any() else float("inf")
        out[f"ssim_{view}"] = float(np.mean([ssim(b, a, data_range=data_range, win_size=win)
                                             for a, b in zip(ps, ts)]))
    return out


def slice_metrics(samples: Any, reference: Any, bins: int = 32) -> dict[str, float]:
    """Unconditional slices ``[n, 1, H, W]`` against reference slices: the gap in mean and std of the
    intensities, the total-variation distance of their histograms over ``[0, 1]`` (``bins`` bins, values
    outside counted in the end bins) and the RMSE between the mean images."""
    s = samples.detach().cpu().double() if torch.is_tensor(samples) else torch.as_tensor(samples, dtype=torch.float64)
    r = reference.detach().cpu().double() if torch.is_tensor(reference) else torch.as_tensor(reference, dtype=torch.float64)

    def hist(v: torch.Tensor) -> torch.Tensor:
        h = torch.histc(v.clamp(0.0, 1.0).flatten(), bins=bins, min=0.0, max=1.0)
        return h / h.sum().clamp_min(1.0)

    return {"mean_gap": float((s.mean() - r.mean()).abs()), "std_gap": float((s.std() - r.std()).abs()),
            "histogram_tv": float(0.5 * (hist(s) - hist(r)).abs().sum()),
            "mean_image_rmse": float((s.mean(0) - r.mean(0)).pow(2).mean().sqrt())}

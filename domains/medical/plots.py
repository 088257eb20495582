"""Figures of the medical domain: three orthogonal views of volumes (a bare matplotlib Figure,
never pyplot, so no backend is selected or switched)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["orthogonal_views", "plot_samples"]


def orthogonal_views(stack: torch.Tensor) -> dict[str, torch.Tensor]:
    """The central axial, coronal and sagittal slices of a stack ``[Z, 1, H, W]`` (or ``[Z, H, W]``),
    flipped for display so that y (anterior, axial view) and z (superior, coronal and sagittal views)
    point upwards; x runs to the right."""
    v = stack[:, 0] if stack.dim() == 4 else stack
    z, h, w = v.shape
    return {"axial": v[z // 2].flip(0), "coronal": v[:, h // 2, :].flip(0), "sagittal": v[:, :, w // 2].flip(0)}


def plot_samples(path: str | os.PathLike, *, truth: torch.Tensor, volume: torch.Tensor | None = None,
                 slices: torch.Tensor | None = None, n: int = 6, zooms: tuple[float, float, float] | None = None) -> Path:
    """Row 1: the views of ``truth``; row 2: the views of ``volume`` (a reconstruction), or up to ``n``
    generated axial ``slices``. Grey scale over [0, 1]; ``zooms`` (x, y, z voxel spacing) gives the
    coronal and sagittal views their physical aspect."""
    from matplotlib.figure import Figure

    from workbench.data import save_figure

    cols = 3 if slices is None else max(3, min(n, len(slices)))
    fig = Figure(figsize=(2.2 * cols, 4.6))
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    kw = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "interpolation": "nearest"}
    zx, zy, zz = zooms or (1.0, 1.0, 1.0)
    aspect = {"axial": zy / zx, "coronal": zz / zx, "sagittal": zz / zy}
    for j, (name, img) in enumerate(orthogonal_views(truth).items()):
        axes[0, j].imshow(img.numpy(), aspect=aspect[name], **kw)
        axes[0, j].set_title(f"truth {name}" if volume is not None else f"test {name}", fontsize=9)
    if volume is not None:
        for j, (name, img) in enumerate(orthogonal_views(volume).items()):
            axes[1, j].imshow(img.numpy(), aspect=aspect[name], **kw)
            axes[1, j].set_title(f"sample {name}", fontsize=9)
    elif slices is not None:
        s = slices[:, 0] if slices.dim() == 4 else slices
        for j in range(min(cols, len(s))):
            axes[1, j].imshow(s[j].numpy(), **kw)
            axes[1, j].set_title(f"generated {j}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)

"""Figures of the crystals domain: sampled against reference lattice lengths and densities, and one
sampled unit cell (fractional coordinates projected on the a-b plane, coloured by element)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["crystal_figure"]


def crystal_figure(samples: Sequence[Any], reference: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Save a three-panel figure: histograms of lattice lengths a, b, c and of densities (g/cm^3) of the
    sampled Structures (None entries skipped) against the reference, and the first sampled cell.
    Uses matplotlib's object API (no global backend or pyplot state is touched)."""
    from matplotlib.figure import Figure

    from workbench.data import save_figure

    got = [s for s in samples if s is not None]
    ref = [s for s in reference if s is not None]
    fig = Figure(figsize=(11, 3.4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for data, label, style in ((ref, "reference", {"alpha": 0.45}), (got, "sampled", {"histtype": "step", "lw": 1.6})):
        if data:
            lengths = np.concatenate([s.lattice.abc for s in data])
            ax1.hist(lengths, bins=30, density=True, label=label, **style)
            ax2.hist([s.density for s in data], bins=30, density=True, label=label, **style)
    ax1.set_xlabel("lattice length (Å)")
    ax2.set_xlabel("density (g/cm³)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    if got:
        s = got[0]
        f = np.asarray(s.frac_coords)
        z = [site.specie.Z for site in s]
        sc = ax3.scatter(f[:, 0], f[:, 1], c=z, cmap="viridis", s=120, edgecolors="k")
        for (x, y), site in zip(f[:, :2], s):
            ax3.annotate(site.specie.symbol, (x, y), fontsize=8, ha="center", va="center", color="w")
        fig.colorbar(sc, ax=ax3, label="Z", fraction=0.046)
        ax3.set_title(f"{s.composition.reduced_formula}: a={s.lattice.a:.2f} b={s.lattice.b:.2f} c={s.lattice.c:.2f} Å",
                      fontsize=8)
    ax3.set_xlim(0, 1)
    ax3.set_ylim(0, 1)
    ax3.set_xlabel("fractional a")
    ax3.set_ylabel("fractional b")
    ax3.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)

"""Figures: generated graphs next to reference graphs; molecule grids."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import networkx as nx

__all__ = ["plot_graphs", "plot_molecules"]


def _save(fig, path: str | os.PathLike) -> Path:
    from workbench.data import save_figure

    return save_figure(fig, path, dpi=90)


def plot_graphs(generated: Sequence[nx.Graph], reference: Sequence[nx.Graph], path: str | os.PathLike,
                n: int = 8) -> Path:
    """Two rows: ``n`` reference graphs (top) and ``n`` generated graphs (bottom)."""
    from matplotlib.figure import Figure  # not pyplot: no backend is selected or switched

    fig = Figure(figsize=(2 * n, 4.2))
    axes = fig.subplots(2, n, squeeze=False)
    for row, (graphs, title) in enumerate(((reference, "test"), (generated, "generated"))):
        for j in range(n):
            ax = axes[row, j]
            ax.axis("off")
            if j < len(graphs):
                G = graphs[j]
                nx.draw(G, pos=nx.spring_layout(G, seed=0), ax=ax, node_size=12, width=0.6)
                if j == 0:
                    ax.set_title(title, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def plot_molecules(mols: Sequence, path: str | os.PathLike, per_row: int = 4) -> Path:
    """A grid image of molecules (None entries are skipped) drawn by RDKit."""
    from rdkit.Chem import Draw

    mols = [m for m in mols if m is not None] or []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not mols:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3, 1))
        fig.text(0.1, 0.5, "no valid molecules")
        return _save(fig, path)
    img = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(200, 200))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    img.save(tmp)
    os.replace(tmp, path)
    return path

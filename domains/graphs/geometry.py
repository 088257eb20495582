"""The graph State's geometry: masked node features and symmetric, zero-diagonal adjacency noise."""
from __future__ import annotations

from workbench.geometry import Masked, Product, Symmetric

__all__ = ["graph_geometry"]


def graph_geometry() -> Product:
    """``Product(x=Masked(), adj=Symmetric())``, bound per batch to the node flags."""
    return Product(x=Masked(), adj=Symmetric())

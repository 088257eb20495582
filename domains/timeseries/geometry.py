"""The geometry of a TSDiff window ``[B, L, 1 + lags]``: Euclidean; a batch's ``mask`` (same
shape as the window, 1 = observed) removes missing values from the noise and the loss."""
from __future__ import annotations

from workbench.geometry import Euclidean

__all__ = ["series_geometry"]


def series_geometry() -> Euclidean:
    """Euclidean geometry with an optional per-entry observed mask (bound per batch)."""
    return Euclidean()

"""The embedded default data set of the crystals domain: procedurally generated Perov-5-like crystals.

This is a **stand-in**, not a materials data set: cubic ABX3 perovskite cells (5 atoms) with
elements drawn from short lists, a lattice constant drawn uniformly from [3.6, 4.4] A, a small random
symmetric strain and small random atomic displacements. Nothing here was relaxed or computed with
DFT, and the compositions are only charge-balanced under common oxidation states
(A+ B5+ / A2+ B4+ / A3+ B3+ with O or S, A+ B2+ with F, A3+ B6+ with N). It lets the domain's
tests and demos run with no download; use the CDVAE files (``source: perov_5``) for any result.

Everything is drawn from ``numpy.random.default_rng([seed, stream])``: the same seed gives the same
crystals on any machine.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["A_SITE", "B_SITE", "X_SITE", "generate_perovskites"]

#: A-site cations by oxidation state
A_SITE = {1: ("Na", "K", "Rb", "Cs"), 2: ("Ca", "Sr", "Ba", "Pb"), 3: ("La", "Y", "Bi")}
#: B-site cations by oxidation state
B_SITE = {2: ("Mg", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"), 3: ("Al", "Sc", "Ti", "V", "Cr", "Fe", "Ga", "In"),
          4: ("Ti", "Zr", "Hf", "Sn", "Ge", "Mn"), 5: ("Nb", "Ta", "V", "Sb"), 6: ("W", "Mo")}
#: anions and the (A, B) oxidation-state pairs that balance three of them
X_SITE = {"O": ((1, 5), (2, 4), (3, 3)), "S": ((1, 5), (2, 4), (3, 3)), "F": ((1, 2),), "N": ((3, 6),)}

#: fractional positions: A at the corner, B at the body centre, X at the face centres
_POSITIONS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


def generate_perovskites(n: int, seed: int = 0, *, stream: int = 0, a_range: tuple[float, float] = (3.6, 4.4),
                         strain: float = 0.02, displacement: float = 0.01) -> tuple[list[Any], list[str]]:
    """``n`` distorted cubic ABX3 perovskites (pymatgen Structures) and their ids ``proto-<seed>-<stream>-<k>``.

    Args:
        seed, stream: the random stream (the training and test sets use different ``stream``).
        a_range: the cubic lattice constant is uniform in this range (A).
        strain: each entry of a symmetric strain tensor is uniform in [-strain, strain].
        displacement: each fractional coordinate moves by a normal of this std (before wrapping).
    """
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng([int(seed), int(stream)])
    anions = sorted(X_SITE)
    out, ids = [], []
    for k in range(int(n)):
        x = anions[rng.integers(len(anions))]
        qa, qb = X_SITE[x][rng.integers(len(X_SITE[x]))]
        a_el = A_SITE[qa][rng.integers(len(A_SITE[qa]))]
        b_el = B_SITE[qb][rng.integers(len(B_SITE[qb]))]
        a = rng.uniform(*a_range)
        e = rng.uniform(-strain, strain, size=(3, 3))
        e = 0.5 * (e + e.T)
        lattice = a * (np.eye(3) + e)
        frac = _POSITIONS + rng.normal(0.0, displacement, size=_POSITIONS.shape)
        frac -= np.floor(frac)
        out.append(Structure(Lattice(lattice), [a_el, b_el, x, x, x], frac, coords_are_cartesian=False))
        ids.append(f"proto-{seed}-{stream}-{k}")
    return out, ids

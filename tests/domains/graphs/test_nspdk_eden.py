"""Our NSPDK MMD against EDeN's (the ``eden-kernel`` package), computed the way GDSS computes it:
``vectorize(graphs, complexity=4, discrete=True)``, linear kernel, mean(K_xx) + mean(K_yy) -
2 mean(K_xy).

With 30-bit feature hashing the two must agree to rounding; at the default 16 bits both suffer hash
collisions, and EDeN's own value moves by up to ~2 % between Python hash seeds (it hashes label
strings with the salted ``hash``), so there the tolerance is 3 %. Even at 30 bits some hash seeds
make EDeN collide (PYTHONHASHSEED=4 moves its labelled-random value by 1.4e-4), so EDeN runs in a
subprocess with PYTHONHASHSEED=0, collision-free on these sets; ours does not depend on the seed.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

nx = pytest.importorskip("networkx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from eden.graph import vectorize
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.skip("EDeN is not installed (pip install eden-kernel); NSPDK is not compared with it",
                    allow_module_level=True)
Chem = pytest.importorskip("rdkit.Chem", reason="the molecule set needs RDKit (pip install 'workbench[graphs]')")
from sklearn.metrics.pairwise import pairwise_kernels  # noqa: E402  (an EDeN dependency)

from workbench.domains.graphs.io import generate_community_small  # noqa: E402
from workbench.domains.graphs.metrics import mol_to_nx, nspdk_mmd  # noqa: E402

SMILES_A = ["CCO", "CC(=O)O", "c1ccccc1", "CCN", "CC(C)O", "C1CCCCC1", "CC#N", "OC1CCOC1", "CC(=O)N",
            "C1=CC=CN=C1", "CCOC(=O)C", "NC(=O)N", "CC1=CC=CC=C1", "OCC(O)CO", "C1CC1N"]
SMILES_B = ["CCCC", "CCCCO", "CC(C)C", "CC=O", "C=CC=C", "CCOCC", "CN(C)C", "O=C1CCCC1", "CC1CCCO1", "N#CC#N",
            "OC(=O)C(=O)O", "C1COCCN1", "CC(N)C(=O)O", "FC(F)F", "C1=CNC=C1"]


def _labelled_random(n: int, seed: int, p: float) -> list:
    """G(n, p) graphs of 6-11 nodes with atom-like node labels and bond-order edge labels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        G = nx.gnp_random_graph(int(rng.integers(6, 12)), p, seed=int(rng.integers(1 << 30)))
        for u in G.nodes:
            G.nodes[u]["label"] = str(rng.choice(["C", "N", "O"]))
        for u, v in G.edges:
            G.edges[u, v]["label"] = int(rng.integers(1, 3))
        out.append(G)
    return out


def _constant_labels(graphs: list) -> list:
    out = []
    for g in graphs:
        h = nx.Graph()
        h.add_nodes_from(g.nodes, label="v")
        h.add_edges_from(g.edges, label=1)
        out.append(h)
    return out


SETS = {
    "molecules": lambda: ([mol_to_nx(Chem.MolFromSmiles(s)) for s in SMILES_A],
                          [mol_to_nx(Chem.MolFromSmiles(s)) for s in SMILES_B]),
    "labelled_random": lambda: (_labelled_random(20, 0, 0.25), _labelled_random(20, 1, 0.4)),
    "community_small": lambda: (_constant_labels(generate_community_small(12, seed=0)),
                                _constant_labels(generate_community_small(12, seed=1))),
}


def _used_columns(X, Y):
    """X and Y restricted to the feature columns either uses (a linear kernel is unchanged; with
    2^30 columns sklearn's kernel on the full sparse matrices takes seconds)."""
    both = sparse.vstack([X, Y]).tocoo()
    cols, new = np.unique(both.col, return_inverse=True)
    compact = sparse.csr_matrix((both.data, (both.row, new)), shape=(both.shape[0], len(cols)))
    return compact[: X.shape[0]], compact[X.shape[0]:]


def eden_nspdk_mmd(ref: list, gen: list, nbits: int = 16) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = vectorize(ref, complexity=4, discrete=True, nbits=nbits)
        Y = vectorize(gen, complexity=4, discrete=True, nbits=nbits)
    X, Y = _used_columns(X, Y)
    return float(np.average(pairwise_kernels(X, None, metric="linear"))
                 + np.average(pairwise_kernels(Y, None, metric="linear"))
                 - 2 * np.average(pairwise_kernels(X, Y, metric="linear")))


@functools.cache
def eden_values() -> dict[str, dict[str, float]]:
    """EDeN's MMD of every set at 30 and 16 bits, computed under PYTHONHASHSEED=0 (see above)."""
    code = ("import json; from tests.domains.graphs.test_nspdk_eden import SETS, eden_nspdk_mmd\n"
            "print(json.dumps({n: {str(b): eden_nspdk_mmd(*make(), nbits=b) for b in (30, 16)}"
            " for n, make in SETS.items()}))")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(SETS))
def test_nspdk_mmd_equals_eden_without_hash_collisions(name: str) -> None:
    ref, gen = SETS[name]()
    ours, eden = nspdk_mmd(ref, gen, nbits=30), eden_values()[name]["30"]
    assert eden > 1e-3, "the sets should differ"
    assert ours == pytest.approx(eden, rel=1e-9, abs=1e-12), f"{name}: ours {ours} vs EDeN {eden}"


@pytest.mark.parametrize("name", sorted(SETS))
def test_nspdk_mmd_near_eden_at_gdss_settings(name: str) -> None:
    ref, gen = SETS[name]()
    ours, eden = nspdk_mmd(ref, gen), eden_values()[name]["16"]
    assert ours == pytest.approx(eden, rel=0.03), f"{name}: ours {ours} vs EDeN {eden}"

"""Metrics on hand-made graphs and molecules with known values."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from workbench.domains.graphs.metrics import (
    clustering_mmd, degree_mmd, emd_1d, gaussian_emd, mmd, nspdk_features, nspdk_mmd, orbit_counts, orbit_mmd,
)


def test_emd_and_kernels() -> None:
    assert emd_1d(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert emd_1d(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), distance_scaling=100) == pytest.approx(0.02)
    assert gaussian_emd(np.array([1.0, 0]), np.array([0, 1.0]), sigma=1.0) == pytest.approx(math.exp(-0.5))


def test_degree_mmd_by_hand() -> None:
    """P3 has degree pmf [0, 2/3, 1/3]; a triangle [0, 0, 1]; EMD = 2/3; MMD = 2 - 2 exp(-(2/3)^2 / 2)."""
    got = degree_mmd([nx.path_graph(3)], [nx.complete_graph(3)])
    assert got == pytest.approx(2 - 2 * math.exp(-((2 / 3) ** 2) / 2))
    gs = [nx.path_graph(5), nx.cycle_graph(6)]
    assert degree_mmd(gs, gs) == pytest.approx(0.0, abs=1e-12)


def test_clustering_mmd_by_hand() -> None:
    """Triangle: all coefficients 1 (bin 99); star: all 0 (bin 0); EMD = 99 / 100."""
    got = clustering_mmd([nx.complete_graph(3)], [nx.star_graph(3)])
    assert got == pytest.approx(2 - 2 * math.exp(-(0.99**2) / (2 * 0.01)))


@pytest.mark.parametrize("graph,node_orbits", [
    (nx.complete_graph(4), {14: 1, 3: 3, 0: 3}),
    (nx.cycle_graph(4), {8: 1, 1: 2, 2: 1, 0: 2}),
    (nx.Graph([(0, 1), (1, 2), (2, 0), (0, 3), (1, 3)]), None),  # diamond, checked below
])
def test_orbit_counts(graph, node_orbits) -> None:
    c = orbit_counts(graph)
    if node_orbits is not None:
        for u in range(4):
            for orbit, count in node_orbits.items():
                assert c[u, orbit] == count, (u, orbit)
    else:  # diamond: nodes 0, 1 have degree 3 (orbit 13), nodes 2, 3 degree 2 (orbit 12)
        assert c[0, 13] == c[1, 13] == 1 and c[2, 12] == c[3, 12] == 1
        assert c[:, 3].tolist() == [2, 2, 1, 1]


def test_orbit_counts_match_brute_force_on_a_random_graph() -> None:
    from itertools import combinations

    G = nx.gnp_random_graph(9, 0.4, seed=3)
    c = orbit_counts(G)
    # every connected induced 4-node subgraph is counted once per node: sum of orbits 4..14 = 4 x #subgraphs
    n4 = sum(nx.is_connected(G.subgraph(s)) for s in combinations(G.nodes(), 4))
    n3 = sum(nx.is_connected(G.subgraph(s)) for s in combinations(G.nodes(), 3))
    assert c[:, 4:].sum() == 4 * n4 and c[:, 1:4].sum() == 3 * n3
    assert c[:, 3].sum() == 3 * sum(nx.triangles(G).values()) // 3


def test_mmd_properties() -> None:
    a = [nx.gnp_random_graph(10, 0.3, seed=s) for s in range(4)]
    b = [nx.gnp_random_graph(10, 0.8, seed=s) for s in range(4)]
    assert orbit_mmd(a, a) == pytest.approx(0.0, abs=1e-12)
    assert orbit_mmd(a, b) > 0.01
    assert mmd([np.ones(3)], [], lambda x, y: 1.0) != mmd([np.ones(3)], [], lambda x, y: 1.0)  # nan when empty


def _mol_graph(smiles: str) -> nx.Graph:
    from rdkit import Chem

    from workbench.domains.graphs.metrics import mol_to_nx

    return mol_to_nx(Chem.MolFromSmiles(smiles))


def test_nspdk() -> None:
    pytest.importorskip("rdkit")
    g = _mol_graph("CC(=O)O")
    f = nspdk_features(g)
    assert sum(v * v for v in f.values()) == pytest.approx(1.0)
    relabelled = nx.relabel_nodes(g, {u: 10 - u for u in g.nodes()})
    assert nspdk_features(relabelled) == pytest.approx(f)
    a = [_mol_graph(s) for s in ("CCO", "CCN", "c1ccccc1")]
    b = [_mol_graph(s) for s in ("C#N", "FC(F)F", "OC=O")]
    assert nspdk_mmd(a, a) == pytest.approx(0.0, abs=1e-12)
    assert nspdk_mmd(a, b) > nspdk_mmd(a, a[:2] + [_mol_graph("c1ccncc1")]) > 0


def test_molecule_metrics_by_hand() -> None:
    """4 samples: 3 decoded (2 valid before correction), SMILES {CCO, CCO, C#N}; train = {CCO}."""
    pytest.importorskip("rdkit")
    from rdkit import Chem

    from workbench.domains.graphs.io import Decoded
    from workbench.domains.graphs.metrics import molecule_metrics

    decoded = [Decoded(Chem.MolFromSmiles("CCO"), True), Decoded(Chem.MolFromSmiles("OCC"), True),
               Decoded(Chem.MolFromSmiles("C#N"), False), Decoded(None, False)]
    m = molecule_metrics(decoded, train_smiles=["CCO"], test_smiles=["CCO", "C#N"], with_fcd=False)
    assert m["validity_wo_correction"] == pytest.approx(0.5)
    assert m["validity"] == pytest.approx(0.75)
    assert m["uniqueness"] == pytest.approx(2 / 3)
    assert m["novelty"] == pytest.approx(0.5)
    assert m["nspdk_mmd"] >= 0


def test_fcd_uses_shipped_chemnet() -> None:
    pytest.importorskip("fcd_torch")
    from workbench.domains.graphs.metrics import fcd

    a = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "OCCO", "CNC", "CC#N"]
    b = ["FC(F)(F)F", "ClCCl", "BrCBr", "FCF", "ClC(Cl)Cl", "FC(F)Cl", "BrCCl", "ICI"]
    same = fcd(a, a)
    assert abs(same) < 1e-3
    assert fcd(a, b) > 1.0

"""Native formats: JSON graph lists, SMILES CSV, kekulized encoding, GDSS decoding, SDF."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402

from workbench.domains.graphs.io import (  # noqa: E402
    QM9_ATOMS, ZINC_ATOMS, GraphFormatError, MoleculeError, canonical_smiles, correct_valency, decode_molecule,
    encode_molecule, gdss_split, generate_community_small, generate_grid, read_graph_json, read_smiles_csv,
    write_sdf, write_smiles,
)


def test_read_graph_json_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "g.json.gz"
    with gzip.open(good, "wt") as f:
        json.dump({"graphs": [{"num_nodes": 3, "edges": [[0, 1], [1, 2]]}, {"num_nodes": 2, "edges": []}]}, f)
    gs = read_graph_json(good)
    assert [g.number_of_nodes() for g in gs] == [3, 2] and gs[0].number_of_edges() == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GraphFormatError, match="bad.json"):
        read_graph_json(bad)
    out = tmp_path / "out.json"
    out.write_text(json.dumps({"graphs": [{"num_nodes": 2, "edges": [[0, 5]]}]}))
    with pytest.raises(GraphFormatError, match="outside"):
        read_graph_json(out)


def test_split_and_generators() -> None:
    train, test = gdss_split(list(range(100)))
    assert test == list(range(20)) and len(train) == 80
    cs = generate_community_small(30, seed=1)
    assert all(12 <= g.number_of_nodes() <= 20 and g.number_of_nodes() % 2 == 0 for g in cs)
    assert all(nx.is_connected(g) or nx.number_connected_components(g) <= 2 for g in cs)
    assert generate_community_small(5, seed=1)[0].edges() == generate_community_small(5, seed=1)[0].edges()
    grids = generate_grid(5, seed=0)
    assert all(100 <= g.number_of_nodes() <= 361 for g in grids)


def test_encode_benzene_kekulized() -> None:
    types, adj = encode_molecule("c1ccccc1", QM9_ATOMS, 9)
    assert (types[:6] == 0).all() and (types[6:] == -1).all()
    assert (adj == adj.T).all() and sorted(np.unique(adj[adj > 0]).tolist()) == [1, 2]
    assert (adj == 2).sum() == 6 and (adj == 1).sum() == 6  # 3 double + 3 single bonds, both triangles


@pytest.mark.parametrize("smiles,match", [("C1CC", "invalid"), ("CCS", "vocabulary"), ("CCCCCCCCCC", "max_atoms")])
def test_encode_errors(smiles: str, match: str) -> None:
    with pytest.raises(MoleculeError, match=match):
        encode_molecule(smiles, QM9_ATOMS, 9)


@pytest.mark.parametrize("smiles", ["CC(=O)O", "C#N", "c1ccncc1", "OC1=NON=C1OC=O", "FC(F)F"])
def test_round_trip(smiles: str) -> None:
    types, adj = encode_molecule(smiles, QM9_ATOMS, 9)
    d = decode_molecule(types, adj, QM9_ATOMS)
    assert d.valid_without_correction
    assert Chem.MolToSmiles(d.mol, isomericSmiles=False) == canonical_smiles(smiles)


def test_charge_rule_and_correction() -> None:
    # ammonium-like N with four bonds: +1 charge, valid without correction (GDSS's rule)
    types = np.array([1, 0, 0, 0, 0, -1, -1, -1, -1])
    adj = np.zeros((9, 9), dtype=int)
    for j in range(1, 5):
        adj[0, j] = adj[j, 0] = 1
    d = decode_molecule(types, adj, QM9_ATOMS)
    assert d.valid_without_correction and "[N+]" in Chem.MolToSmiles(d.mol)
    # carbon with five single bonds: needs correction
    types = np.array([0, 0, 0, 0, 0, 0, -1, -1, -1])
    adj = np.zeros((9, 9), dtype=int)
    for j in range(1, 6):
        adj[0, j] = adj[j, 0] = 1
    d = decode_molecule(types, adj, QM9_ATOMS)
    assert not d.valid_without_correction and d.mol is not None
    assert all(a.GetDegree() <= 4 for a in d.mol.GetAtoms())


def test_largest_fragment_kept() -> None:
    types = np.array([0, 0, 0, 2, -1, -1, -1, -1, -1])
    adj = np.zeros((9, 9), dtype=int)
    adj[0, 1] = adj[1, 0] = adj[1, 2] = adj[2, 1] = 1  # C-C-C and a lone O
    d = decode_molecule(types, adj, QM9_ATOMS)
    assert Chem.MolToSmiles(d.mol) == "CCC"
    assert correct_valency(Chem.MolFromSmiles("CCO")) is not None


def test_smiles_csv_and_exports(tmp_path: Path) -> None:
    p = tmp_path / "m.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("idx,SMILES\n0,CCO\n1,c1ccccc1\n")
    assert read_smiles_csv(p, "SMILES") == ["CCO", "c1ccccc1"]
    with pytest.raises(GraphFormatError, match="no column 'smiles'"):
        read_smiles_csv(p, "smiles")
    mols = [Chem.MolFromSmiles("CCO"), None, Chem.MolFromSmiles("CBr")]
    smi = write_smiles(mols, tmp_path / "s.smi").read_text().splitlines()
    assert smi == ["CCO", "", "CBr"]
    sdf = write_sdf(mols, tmp_path / "s.sdf")
    back = [m for m in Chem.SDMolSupplier(str(sdf))]
    assert len(back) == 2 and Chem.MolToSmiles(back[1]) == "CBr"
    assert encode_molecule("CBr", ZINC_ATOMS, 38)[0][1] == ZINC_ATOMS.index("Br")

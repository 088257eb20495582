"""Datamodules (generic graphs and molecules), PyG interoperability, and the GDSS networks."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("networkx")
from workbench.data import data_root  # noqa: E402
from workbench.domains.graphs.data import (  # noqa: E402
    GenericGraphDataModule, MoleculeDataModule, from_pyg, graphs_to_tensors, quantize_atoms, quantize_bonds,
    tensors_to_graphs, to_pyg,
)
from workbench.domains.graphs.networks import GDSSNetwork  # noqa: E402


def test_generated_community_small_batches() -> None:
    dm = GenericGraphDataModule("community_small", source="generate", n_graphs=30, batch_size=8)
    dm.setup()
    assert len(dm.train_set) == 24 and len(dm.reference()) == 6
    b = next(iter(dm.train_dataloader()))
    x, adj, mask = b["x"]["x"], b["x"]["adj"], b["mask"]
    assert x.shape == (8, 20, 10) and adj.shape == (8, 20, 20) and mask.shape == (8, 20)
    assert torch.equal(adj, adj.transpose(1, 2)) and (torch.diagonal(adj, dim1=1, dim2=2) == 0).all()
    assert torch.equal(x.argmax(-1) * mask.long(), adj.sum(-1).long())  # one-hot degree
    t = dm.sample_template(5)
    assert t["mask"].shape == (5, 20) and set(t["mask"].sum(-1).tolist()) <= set(range(12, 21))


def test_pyg_round_trip() -> None:
    dm = GenericGraphDataModule("community_small", source="generate", n_graphs=10)
    dm.setup()
    item = dm.train_set[0]
    data = to_pyg(item)
    assert data.num_nodes == int(item["mask"].sum()) and data.edge_index.shape[0] == 2
    back = from_pyg(data, 20)
    assert torch.equal(back["x"]["adj"], item["x"]["adj"]) and torch.equal(back["mask"], item["mask"])


def test_limits_are_errors_and_empty_graphs_warn() -> None:
    import networkx as nx

    with pytest.raises(ValueError, match="exceed max_nodes"):
        graphs_to_tensors([nx.path_graph(30)], max_nodes=20, max_feat=10)
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        ds = graphs_to_tensors([nx.Graph(), nx.path_graph(3)], max_nodes=5, max_feat=4)
    assert len(ds) == 1
    g = tensors_to_graphs(torch.tensor([[[0.0, 0.9, 0.1], [0.9, 0, 0.2], [0.1, 0.2, 0]]]))[0]
    assert sorted(g.edges()) == [(0, 1)]


@pytest.mark.skipif(not (data_root() / "graphs" / "community_small.json.gz").exists(),
                    reason="community_small.json.gz not under WORKBENCH_DATA/graphs")
def test_community_small_file_matches_gdss_split() -> None:
    dm = GenericGraphDataModule("community_small", source="file")
    dm.setup()
    assert len(dm.train_set) == 80 and len(dm.reference()) == 20


def _write_csv(path: Path, rows: list[str]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("index,SMILES1\n" + "".join(f"{i},{s}\n" for i, s in enumerate(rows)))
    return path


def test_molecule_datamodule_split_cache_and_counted_drops(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("rdkit")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    rows = ["CCO", "c1ccccc1", "C#N", "not_a_smiles", "CCS", "OC=O", "CC(C)C", "CCN", "FC(F)F", "CO"]
    csv = _write_csv(tmp_path / "mols.csv.gz", rows)
    idx = tmp_path / "test_idx.json"
    idx.write_text(json.dumps({"valid_idxs": ["001", "002"]}))
    dm = MoleculeDataModule("qm9", path=str(csv), test_index=str(idx), batch_size=4)
    with pytest.warns(UserWarning, match=r"dropped 2 of 10 molecules"):
        dm.setup()
    assert dm.test_smiles == ["c1ccccc1", "C#N"] and len(dm.train_smiles) == 6
    b = next(iter(dm.train_dataloader()))
    assert b["x"]["x"].shape == (4, 9, 4) and b["x"]["adj"].max() <= 3
    assert len(list((tmp_path / "cache" / "graphs").glob("*.npz"))) == 1
    dm2 = MoleculeDataModule("qm9", path=str(csv), test_index=str(idx))
    dm2.setup()  # from the cache: no re-encoding, so no warning either
    assert dm2.train_smiles == dm.train_smiles
    # decoding the training tensors gives the training molecules back
    x, adj = dm.train_set.x[:3], dm.train_set.adj[:3]
    decoded = dm.decode({"x": x, "adj": adj})
    from rdkit import Chem

    assert [Chem.MolToSmiles(d.mol, isomericSmiles=False) for d in decoded] == dm.train_smiles[:3]
    assert torch.equal(quantize_bonds(torch.tensor([0.4, 0.6, 1.6, 2.7])), torch.tensor([0, 1, 2, 3]))
    assert quantize_atoms(torch.tensor([[0.1, 0.2], [0.7, 0.9]])).tolist() == [-1, 0]


def test_molecule_test_split_share_comes_from_the_file(tmp_path: Path, monkeypatch) -> None:
    """test_size counts rows of the whole file; a head (limit) keeps the same share of its rows,
    the file's row count read from the file (not QM9's size); a split leaving no training rows
    is an error."""
    pytest.importorskip("rdkit")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv = _write_csv(tmp_path / "mols.csv.gz", ["CCO", "C#N", "OC=O", "CC(C)C", "CCN", "FC(F)F", "CO", "CCC",
                                                   "CC", "NCCO"])
    for limit, n_test in ((None, 4), (5, 2), (8, 3)):   # round(4 * limit / 10)
        dm = MoleculeDataModule("qm9", path=str(csv), test_size=4, limit=limit)
        dm.setup()
        assert len(dm.test_smiles) == n_test and len(dm.train_smiles) == (limit or 10) - n_test, limit
    with pytest.raises(ValueError, match="no training rows"):
        MoleculeDataModule("qm9", path=str(csv), test_size=10).setup()
    # a CSV of one's own does not inherit the dataset's published split: a tenth of it by default
    dm = MoleculeDataModule("zinc250k", path=str(csv), smiles_column="SMILES1", test_index="")
    dm.setup()
    assert len(dm.test_smiles) == 1 and len(dm.train_smiles) == 9


@pytest.mark.skipif(not (data_root() / "graphs" / "qm9.csv.gz").exists(), reason="qm9.csv.gz not under WORKBENCH_DATA/graphs")
def test_real_qm9_head(tmp_path: Path, monkeypatch) -> None:
    from workbench.domains.graphs.io import read_smiles_csv

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    dm = MoleculeDataModule("qm9", limit=2000, batch_size=64)
    dm.setup()
    assert len(dm.train_set) + len(dm.test_set) == 2000
    rows = len(read_smiles_csv(dm.path, dm.column))
    assert abs(len(dm.test_set) - round(13082 * 2000 / rows)) <= 1


def test_gdss_network_equivariance_symmetry_and_masks() -> None:
    torch.manual_seed(0)
    net = GDSSNetwork(max_feat_num=4, x_depth=2, x_nhid=8, a_nhid=8, a_layers=2, a_linears=2, c_hid=4, c_final=2, adim=8)
    B, N = 3, 6
    mask = torch.ones(B, N)
    mask[:, 4:] = 0
    adj = torch.randn(B, N, N)
    adj = (adj + adj.transpose(1, 2)) * mask[:, :, None] * mask[:, None, :]
    adj = adj * (1 - torch.eye(N))
    x = torch.randn(B, N, 4) * mask[..., None]
    out = net({"x": x, "adj": adj}, torch.zeros(B), mask=mask)
    assert out["x"].shape == (B, N, 4) and out["adj"].shape == (B, N, N)
    assert torch.allclose(out["adj"], out["adj"].transpose(1, 2), atol=1e-6)
    assert (out["adj"][:, 4:] == 0).all() and (out["x"][:, 4:] == 0).all()
    assert (torch.diagonal(out["adj"], dim1=1, dim2=2) == 0).all()
    perm = torch.tensor([2, 0, 3, 1, 4, 5])
    outp = net({"x": x[:, perm], "adj": adj[:, perm][:, :, perm]}, torch.zeros(B), mask=mask[:, perm])
    assert torch.allclose(outp["x"], out["x"][:, perm], atol=1e-5)
    assert torch.allclose(outp["adj"], out["adj"][:, perm][:, :, perm], atol=1e-5)
    assert len(net.clip_groups()) == 2


def test_time_embedding_option_makes_output_depend_on_t() -> None:
    net = GDSSNetwork(max_feat_num=3, x_nhid=4, a_nhid=4, a_layers=2, a_linears=2, c_hid=2, c_final=2, adim=4,
                      time_embedding=True)
    state = {"x": torch.rand(2, 5, 3), "adj": torch.zeros(2, 5, 5)}
    a = net(state, torch.tensor([0.1, 0.1]))["x"]
    b = net(state, torch.tensor([0.9, 0.9]))["x"]
    assert not torch.allclose(a, b)


def test_file_sets_are_read_from_the_data_root(tmp_path: Path, monkeypatch) -> None:
    """data_root() is $WORKBENCH_DATA (else $XDG_CACHE_HOME/workbench), apart from the cache
    folder; a graph set written under <data_root>/graphs is what source="file" reads, with
    GDSS's split; a missing file names where it was looked for."""
    from workbench.data import cache_dir
    from workbench.domains.graphs.io import gdss_split, generate_community_small

    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "workbench" and cache_dir() == tmp_path / "xdg" / "workbench" / "cache"
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    assert data_root() == tmp_path / "data"
    graphs = generate_community_small(10, seed=3)
    (tmp_path / "data" / "graphs").mkdir(parents=True)
    with gzip.open(tmp_path / "data" / "graphs" / "community_small.json.gz", "wt") as f:
        json.dump({"graphs": [{"num_nodes": g.number_of_nodes(), "edges": [list(e) for e in g.edges()]}
                              for g in graphs]}, f)
    dm = GenericGraphDataModule("community_small", source="file")
    dm.setup()
    train, test = gdss_split(graphs)
    assert len(dm.train_set) == len(train) == 8
    assert [sorted(g.edges()) for g in dm.reference()] == [sorted(g.edges()) for g in test]
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        GenericGraphDataModule("community_small", source="file").setup()

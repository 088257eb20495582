"""Issue 11 (graphs): every bad input file stops with one DataError naming the file and the
problem, usable input that is altered warns (counted, with where the full list is), splits adapt
to a user's file, and the CLI prints each error as one line with exit code 2.

Each test names the old behaviour it guards against."""
from __future__ import annotations

import gzip
import json
import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("networkx")
pytest.importorskip("rdkit")

from workbench import cli  # noqa: E402
from workbench.errors import DataError, InputWarning  # noqa: E402
from workbench.domains.graphs.data import GenericGraphDataModule, MoleculeDataModule  # noqa: E402

MOLS = ["CCO", "C#N", "OC=O", "CC(C)C", "CCN", "FC(F)F", "CO", "CCC", "CC", "NCCO", "CCCO", "OCCO"]


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    yield
    os.environ.pop("WORKBENCH_RUN_DIR", None)


def _graphs(path: Path, graphs: list[dict]) -> Path:
    text = json.dumps({"graphs": graphs})
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _ring(n: int) -> dict:
    return {"num_nodes": n, "edges": [[i, (i + 1) % n] for i in range(n)]}


def _csv(path: Path, smiles: list[str], column: str = "SMILES1") -> Path:
    path.write_text(f"id,{column}\n" + "".join(f"{i},{s}\n" for i, s in enumerate(smiles)))
    return path


def _raises(fn, *needles: str) -> str:
    with pytest.raises(DataError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


# -- generic graphs -----------------------------------------------------------------------------------
def test_edge_outside_the_node_range(tmp_path: Path) -> None:
    # was a GraphFormatError outside the DataError family (a traceback on the CLI)
    p = _graphs(tmp_path / "g.json", [_ring(4), {"num_nodes": 3, "edges": [[0, 1], [2, 7]]}])
    _raises(GenericGraphDataModule("community_small", path=str(p)).setup, "g.json", "graph 1", "outside", "(2, 7)")


def test_truncated_json_gz(tmp_path: Path) -> None:
    # was a GraphFormatError outside the DataError family
    p = _graphs(tmp_path / "g.json.gz", [_ring(5) for _ in range(10)])
    p.write_bytes(p.read_bytes()[:30])
    _raises(GenericGraphDataModule("community_small", path=str(p)).setup, "g.json.gz", "truncated")


def test_empty_graph_list(tmp_path: Path) -> None:
    # was an empty training set: 0 batches, NaN MMDs, exit code 0
    p = _graphs(tmp_path / "g.json", [])
    _raises(GenericGraphDataModule("community_small", path=str(p)).setup, "g.json", "empty")


def test_a_single_graph_is_not_split_into_nothing(tmp_path: Path) -> None:
    # was: int(0.2 * 1) = 0 test graphs, so every MMD was NaN
    p = _graphs(tmp_path / "one.json", [_ring(5)])
    _raises(GenericGraphDataModule("community_small", path=str(p)).setup, "one.json", "at least 2")


def test_few_graphs_keep_one_test_graph(tmp_path: Path, capsys) -> None:
    # was: 4 graphs -> 0 test graphs (NaN MMDs); split sizes were not printed
    p = _graphs(tmp_path / "four.json", [_ring(5) for _ in range(4)])
    dm = GenericGraphDataModule("community_small", path=str(p))
    dm.setup()
    assert len(dm.train_set) == 3 and len(dm.reference()) == 1
    assert "3 training / 1 test graphs" in capsys.readouterr().err


def test_self_loops_are_removed_with_a_warning(tmp_path: Path) -> None:
    # were dropped silently
    g = _ring(5)
    p = _graphs(tmp_path / "loops.json", [{**g, "edges": g["edges"] + [[2, 2]]}, _ring(4), {**g, "edges": [[0, 0]]}])
    with pytest.warns(InputWarning, match=r"loops\.json: removed self loops from 2 of 3 graphs \(graphs 0, 2\)"):
        dm = GenericGraphDataModule("community_small", path=str(p))
        dm.setup()
    assert dm.train_set.adj.diagonal(dim1=1, dim2=2).abs().sum() == 0


def test_missing_graph_file_names_it(tmp_path: Path) -> None:
    # was a bare FileNotFoundError outside the DataError family
    msg = _raises(GenericGraphDataModule("ego_small", source="file").setup, "ego_small.json.gz", "not found")
    assert str(tmp_path / "data") in msg


def test_graph_over_max_nodes_names_the_file(tmp_path: Path) -> None:
    # was a ValueError naming only "community_small (file)"
    p = _graphs(tmp_path / "big.json", [_ring(5) for _ in range(4)] + [_ring(30)])
    _raises(GenericGraphDataModule("community_small", path=str(p)).setup, "big.json", "max_nodes=20", "graphs 4")


# -- molecules ----------------------------------------------------------------------------------------
def test_csv_without_the_named_column_lists_the_columns(tmp_path: Path) -> None:
    # was GraphFormatError outside the DataError family
    p = _csv(tmp_path / "m.csv", MOLS, column="smi")
    _raises(MoleculeDataModule("qm9", path=str(p)).setup, "m.csv", "'SMILES1'", "'id', 'smi'")


@pytest.mark.parametrize("text,needle", [("smiles\n", "no rows"), ("", "empty")])
def test_header_only_or_empty_csv(tmp_path: Path, text: str, needle: str) -> None:
    # header-only ended in "need at least one array to stack"; an empty file in a misleading "no column"
    p = tmp_path / "m.csv"
    p.write_text(text)
    _raises(MoleculeDataModule("qm9", path=str(p), smiles_column="smiles").setup, "m.csv", needle)


def test_truncated_csv_gz(tmp_path: Path) -> None:
    # was GraphFormatError outside the DataError family
    p = tmp_path / "m.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("smiles\n" + "\n".join(MOLS * 50))
    p.write_bytes(p.read_bytes()[:60])
    _raises(MoleculeDataModule("qm9", path=str(p), smiles_column="smiles").setup, "m.csv.gz", "truncated")


def test_all_molecules_dropped_counts_each_reason(tmp_path: Path) -> None:
    # was "ValueError: need at least one array to stack"
    p = _csv(tmp_path / "m.csv", ["CCCCCCCCCCCC", "CCCCCCCCCCCCC", "CCS", "xx("])
    msg = _raises(MoleculeDataModule("qm9", path=str(p)).setup, "m.csv", "all 4 molecules",
                  "2 with more than max_atoms=9", "1 with atoms outside the vocabulary", "(S)", "1 invalid SMILES")
    assert "lines 2, 3, 4, 5" in msg


def test_a_few_invalid_smiles_warn_with_where_the_list_is_and_again_from_the_cache(tmp_path: Path) -> None:
    # the warning said neither which rows nor where they are listed, and was silent on a cache hit
    p = _csv(tmp_path / "m.csv", MOLS[:5] + ["not_a_smiles"] + MOLS[5:] + ["C1CC"])
    for _ in range(2):  # encode, then reuse the cached encoding
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            dm = MoleculeDataModule("qm9", path=str(p))
            dm.setup()
        msgs = [str(w.message) for w in got if issubclass(w.category, InputWarning)]
        assert len(msgs) == 1 and "m.csv: dropped 2 of 14 molecules: 2 invalid SMILES (lines 7, 15)" in msgs[0], msgs
        listing = dm.dropped_file()
        assert str(listing) in msgs[0] and listing.exists()
        assert "not_a_smiles" in listing.read_text() and "C1CC" in listing.read_text()
    assert len(list((tmp_path / "cache" / "graphs").glob("*.npz"))) == 1


def test_test_index_beyond_the_dataset(tmp_path: Path) -> None:
    # was ignored: the test split came out empty and FCD NaN
    p = _csv(tmp_path / "m.csv", MOLS)
    idx = tmp_path / "idx.json"
    idx.write_text(json.dumps([0, 3, 500]))
    _raises(MoleculeDataModule("qm9", path=str(p), test_index=str(idx)).setup, "idx.json", "500", "12 rows")


def test_a_user_csv_smaller_than_the_qm9_test_split_gets_a_fraction(tmp_path: Path, capsys) -> None:
    # was: QM9's 13,082-row test split applied to a 12-row file (all test / an error)
    p = _csv(tmp_path / "m.csv", MOLS, column="SMILES1")
    dm = MoleculeDataModule("qm9", path=str(p))
    dm.setup()
    assert len(dm.train_set) == 11 and len(dm.test_smiles) == 1
    assert "11 training / 1 test molecules (test_fraction=0.1" in capsys.readouterr().err


def test_an_explicit_test_size_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    # was a plain ValueError outside the DataError family
    p = _csv(tmp_path / "m.csv", MOLS, column="SMILES1")
    _raises(MoleculeDataModule("qm9", path=str(p), test_size=12).setup, "m.csv", "no training rows",
            "datamodule.test_size")


def test_missing_smiles_file_names_it(tmp_path: Path) -> None:
    # was a bare FileNotFoundError outside the DataError family
    _raises(MoleculeDataModule("qm9").setup, str(tmp_path / "data" / "graphs" / "qm9.csv.gz"), "not found")


def test_metrics_refuse_an_empty_test_split() -> None:
    # FCD and the MMDs came out NaN
    from workbench.domains.graphs.metrics import GraphMetrics

    with pytest.raises(DataError, match="test split"):
        GraphMetrics("molecule", atoms=["C"])({}, {"train": ["C"], "test": []})
    with pytest.raises(DataError, match="test split"):
        GraphMetrics("generic")({}, [])


# -- configs and the CLI ------------------------------------------------------------------------------
@pytest.mark.parametrize("exp,keys", [
    ("graphs/qm9_cpu", ["path", "smiles_column", "atoms", "max_atoms", "test_index", "test_size", "test_fraction",
                        "split_seed", "train_subset", "limit", "cache"]),
    ("graphs/zinc250k_cpu", ["path", "smiles_column", "test_index", "test_size", "test_fraction"]),
    ("graphs/community_small_cpu", ["path", "source", "n_graphs", "gen_seed", "max_nodes", "max_feat"]),
    ("graphs/enzymes_cpu", ["path", "max_nodes", "max_feat"]),
])
def test_data_keys_are_in_the_configs(exp: str, keys: list[str]) -> None:
    # were missing: an override needed a `+`
    cfg = cli.compose_config([f"experiment={exp}", *(f"datamodule.{k}=null" for k in keys if k != "cache")])
    assert all(k in cfg.datamodule for k in keys)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err: str, *needles: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("workbench: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


QM9 = ["experiment=graphs/qm9_cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "resume=false",
       "datamodule.train_subset=null", "datamodule.batch_size=16", "sample.n=4", "sample.batch_size=4",
       "module.sample_steps=2"]
GRAPHS = ["experiment=graphs/community_small_cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
          "resume=false", "sample.n=4", "module.sample_steps=2"]


def test_cli_edge_outside_the_node_range(tmp_path: Path, capsys) -> None:
    # was a traceback from inside trainer.fit
    p = _graphs(tmp_path / "bad_edges.json", [_ring(4), {"num_nodes": 3, "edges": [[0, 9]]}])
    code, err = _cli(["train", *GRAPHS, f"run_dir={tmp_path / 'r'}", f"datamodule.path={p}"], capsys)
    assert code == 2
    _one_error_line(err, "bad_edges.json", "graph 1")


def test_cli_csv_without_the_column(tmp_path: Path, capsys) -> None:
    # was a traceback from inside trainer.fit
    p = _csv(tmp_path / "mine.csv", MOLS, column="smi")
    code, err = _cli(["train", *QM9, f"run_dir={tmp_path / 'r'}", f"datamodule.path={p}"], capsys)
    assert code == 2
    _one_error_line(err, "mine.csv", "'SMILES1'", "'smi'")


def test_cli_all_molecules_dropped(tmp_path: Path, capsys) -> None:
    # was "need at least one array to stack" in a traceback
    p = _csv(tmp_path / "big.csv", ["CCCCCCCCCCCC", "CCS"])
    code, err = _cli(["train", *QM9, f"run_dir={tmp_path / 'r'}", f"datamodule.path={p}"], capsys)
    assert code == 2
    _one_error_line(err, "big.csv", "all 2 molecules", "max_atoms")


def test_cli_test_index_beyond_the_dataset(tmp_path: Path, capsys) -> None:
    # was ignored (FCD NaN, exit code 0)
    p = _csv(tmp_path / "m.csv", MOLS, column="SMILES1")
    idx = tmp_path / "my_idx.json"
    idx.write_text("[1, 99]")
    code, err = _cli(["train", *QM9, f"run_dir={tmp_path / 'r'}", f"datamodule.path={p}",
                      f"datamodule.test_index={idx}"], capsys)
    assert code == 2
    _one_error_line(err, "my_idx.json", "99")


def test_cli_small_user_csv_trains_with_an_adapted_split(tmp_path: Path, capsys) -> None:
    # was: QM9's 13,082-row test split on a 12-row file: nothing to train on
    p = _csv(tmp_path / "m.csv", MOLS, column="SMILES1")
    code, err = _cli(["train", *QM9, f"run_dir={tmp_path / 'r'}", f"datamodule.path={p}"], capsys)
    assert code == 0, err
    assert "11 training / 1 test molecules" in err

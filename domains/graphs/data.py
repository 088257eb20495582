"""Datasets and datamodules of the graphs domain (dense, padded batches with node masks).

A batch is ``{"x": {"x": X [B, N, F], "adj": A [B, N, N]}, "mask": flags [B, N]}``; the
datasets also convert items to ``torch_geometric.data.Data`` (:func:`to_pyg`).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from workbench.data import DomainDataModule, atomic_write, cache_dir, data_root, save_tensors, write_json
from workbench.errors import ConfigError, DataError, check_int, check_number, first_rows, warn_input

from .io import (
    MOLECULE_DROP_REASONS, QM9_ATOMS, ZINC_ATOMS, DataFileNotFound, GraphFormatError, MoleculeError, _one_line,
    decode_molecule, gdss_split, generate_community_small, generate_grid, read_graph_json, read_smiles_csv,
    encode_molecule, write_sdf, write_smiles,
)

__all__ = [
    "DenseGraphDataset", "graphs_to_tensors", "tensors_to_graphs", "to_pyg", "from_pyg",
    "GenericGraphDataModule", "MoleculeDataModule", "decode_samples", "GENERIC", "MOLECULES",
]

#: file, max nodes and degree-feature size of GDSS's generic sets
GENERIC = {
    "community_small": {"file": "community_small.json.gz", "max_nodes": 20, "max_feat": 10},
    "ego_small": {"file": "ego_small.json.gz", "max_nodes": 18, "max_feat": 17},
    "grid": {"file": "grid.json.gz", "max_nodes": 361, "max_feat": 5},
    "enzymes": {"file": "ENZYMES.json.gz", "max_nodes": 125, "max_feat": 10},
}
#: file, SMILES column, atoms, max atoms, test-split file of GDSS's molecule sets
MOLECULES = {
    "qm9": {"file": "qm9.csv.gz", "column": "SMILES1", "atoms": QM9_ATOMS, "max_atoms": 9,
            "test_index": None, "test_size": 13082},
    "zinc250k": {"file": "zinc250k.csv.gz", "column": "smiles", "atoms": ZINC_ATOMS, "max_atoms": 38,
                 "test_index": "valid_idx_zinc250k.json", "test_size": None},
}


class DenseGraphDataset(Dataset):
    """Padded graphs: node features ``x [n, N, F]``, adjacency ``adj [n, N, N]``, flags ``[n, N]``."""

    def __init__(self, x: torch.Tensor, adj: torch.Tensor, flags: torch.Tensor) -> None:
        self.x, self.adj, self.flags = x.float(), adj.float(), flags.float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": {"x": self.x[i], "adj": self.adj[i]}, "mask": self.flags[i]}


def graphs_to_tensors(graphs: Sequence[nx.Graph], max_nodes: int, max_feat: int,
                      source: str = "graphs", first_index: int = 0) -> DenseGraphDataset:
    """GDSS's generic-graph encoding: padded 0/1 adjacency and one-hot node degree features.

    Graphs with more than ``max_nodes`` nodes or a degree >= ``max_feat`` are rejected with a
    counted :class:`~workbench.errors.DataError` naming ``source`` and the first graphs; empty graphs
    are skipped with a counted warning; a list with no non-empty graph is an error. Graphs are
    numbered from ``first_index`` in messages (their index in the file).
    """
    kept, empty, too_big, too_deg = [], [], [], []
    for i, G in enumerate(graphs, start=first_index):
        n = G.number_of_nodes()
        if n == 0:
            empty.append(i)
            continue
        if n > max_nodes:
            too_big.append(i)
            continue
        if max(dict(G.degree()).values(), default=0) >= max_feat:
            too_deg.append(i)
            continue
        kept.append(G)
    if too_big or too_deg:
        parts = ([f"{len(too_big)} graph(s) exceed max_nodes={max_nodes} (graphs {first_rows(too_big)})"]
                 if too_big else []) + ([f"{len(too_deg)} graph(s) have a node degree >= max_feat={max_feat} (graphs "
                                         f"{first_rows(too_deg)})"] if too_deg else [])
        raise DataError(f"{' and '.join(parts)}; raise datamodule.max_nodes / max_feat (and network.max_feat_num)",
                        file=source)
    if empty:
        if not kept:
            raise DataError(f"all {len(empty)} graphs are empty (no nodes): nothing to train on", file=source)
        warn_input(f"{source}: skipped {len(empty)} empty graph(s) (graphs {first_rows(empty)})")
    n = len(kept)
    adj = torch.zeros(n, max_nodes, max_nodes)
    flags = torch.zeros(n, max_nodes)
    for i, G in enumerate(kept):
        a = torch.as_tensor(nx.to_numpy_array(G, nodelist=sorted(G.nodes())), dtype=torch.float32)
        k = a.shape[0]
        adj[i, :k, :k] = a
        flags[i, :k] = 1
    deg = adj.sum(-1).long()
    x = torch.nn.functional.one_hot(deg, max_feat).float() * flags[..., None]
    return DenseGraphDataset(x, adj, flags)


def tensors_to_graphs(adj: torch.Tensor, flags: torch.Tensor | None = None, threshold: float = 0.5) -> list[nx.Graph]:
    """GDSS's decoding of generic graphs: threshold the adjacency at 0.5, drop padded and isolated nodes."""
    out = []
    a = (adj.detach().cpu() >= threshold).numpy()
    for i in range(a.shape[0]):
        m = a[i]
        if flags is not None:
            keep = flags[i].detach().cpu().numpy() > 0.5
            m = m[keep][:, keep]
        np.fill_diagonal(m, False)
        G = nx.from_numpy_array(m.astype(np.int64))
        G.remove_nodes_from(list(nx.isolates(G)))
        if G.number_of_nodes() == 0:
            G.add_node(0)  # as GDSS: an empty sample counts as a single-node graph
        out.append(G)
    return out


def to_pyg(item: dict[str, Any]):
    """A dense item -> ``torch_geometric.data.Data(x, edge_index, edge_attr)`` over its real nodes."""
    from torch_geometric.data import Data

    flags = item["mask"] > 0.5
    x = item["x"]["x"][flags]
    adj = item["x"]["adj"][flags][:, flags]
    ei = adj.nonzero().t().contiguous()
    return Data(x=x, edge_index=ei, edge_attr=adj[ei[0], ei[1]], num_nodes=int(flags.sum()))


def from_pyg(data, max_nodes: int) -> dict[str, Any]:
    """The inverse of :func:`to_pyg`: pad a PyG ``Data`` to ``max_nodes``."""
    n = int(data.num_nodes)
    if n > max_nodes:
        raise ValueError(f"graph with {n} nodes exceeds max_nodes={max_nodes}")
    F = data.x.shape[-1]
    x = torch.zeros(max_nodes, F)
    x[:n] = data.x
    adj = torch.zeros(max_nodes, max_nodes)
    w = data.edge_attr if data.edge_attr is not None else torch.ones(data.edge_index.shape[1])
    adj[data.edge_index[0], data.edge_index[1]] = w.float()
    mask = torch.zeros(max_nodes)
    mask[:n] = 1
    return {"x": {"x": x, "adj": adj}, "mask": mask}


class _GraphDataModuleBase(DomainDataModule):
    """Shared parts: node counts of samples drawn from training graphs (GDSS's init_flags)."""

    train_set: DenseGraphDataset

    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        idx = torch.randint(0, len(self.train_set), (n,), generator=generator)
        flags = self.train_set.flags[idx].clone()
        N, F = self.train_set.x.shape[1:]
        return {"x": {"x": torch.zeros(n, N, F), "adj": torch.zeros(n, N, N)}, "mask": flags}


class GenericGraphDataModule(_GraphDataModuleBase):
    """community-small, ego-small, grid or ENZYMES, with GDSS's split and degree features.

    Args:
        name: one of :data:`GENERIC`.
        source: ``"file"`` reads ``$WORKBENCH_DATA/graphs/<file>`` (or ``path``);
            ``"generate"`` builds community-small or grid with networkx as GDSS did (the
            embedded default that needs no download).
        path: a JSON graph list of one's own (implies ``source="file"``).
        n_graphs, gen_seed: size and seed of a generated set.
        max_nodes, max_feat: the padding size and degree-feature size (default: the set's).

    Split: GDSS's, the first 20 % of the graphs are the test set (at least one graph, so a list of
    fewer than 2 graphs is refused); the split sizes are printed to stderr.
    """

    def __init__(self, name: str = "community_small", source: str = "generate", path: str | None = None,
                 n_graphs: int = 100, gen_seed: int = 0, max_nodes: int | None = None, max_feat: int | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if name not in GENERIC:
            raise ConfigError(f"config key 'datamodule.name': unknown graph dataset {name!r}; choose one of "
                              f"{sorted(GENERIC)}")
        if source not in ("file", "generate"):
            raise ConfigError(f"config key 'datamodule.source' must be 'file' or 'generate', got {source!r}")
        if path:
            source = "file"  # a file of one's own is read, whatever the experiment's default source
        if source == "generate" and name not in ("community_small", "grid"):
            raise ConfigError(f"config key 'datamodule.source': only community_small and grid can be generated, "
                              f"not {name!r}")
        spec = GENERIC[name]
        self.name, self.source, self.path = name, source, path
        self.n_graphs = check_int(n_graphs, "datamodule.n_graphs", minimum=2)
        self.gen_seed = check_int(gen_seed, "datamodule.gen_seed")
        self.max_nodes = check_int(max_nodes or spec["max_nodes"], "datamodule.max_nodes", minimum=1)
        self.max_feat = check_int(max_feat or spec["max_feat"], "datamodule.max_feat", minimum=1)
        self.train_graphs: list[nx.Graph] = []
        self.test_graphs: list[nx.Graph] = []

    def load_graphs(self) -> list[nx.Graph]:
        if self.source == "generate":
            gen = generate_community_small if self.name == "community_small" else generate_grid
            return gen(self.n_graphs, seed=self.gen_seed)
        path = self.file()
        if not path.exists():
            raise DataFileNotFound("graph file not found (set WORKBENCH_DATA or datamodule.path, or use "
                                   "datamodule.source=generate)", file=path)
        return read_graph_json(path)

    def file(self) -> Path:
        """The graph file read with ``source="file"``."""
        return Path(self.path) if self.path else data_root() / "graphs" / GENERIC[self.name]["file"]

    def setup(self, stage: str | None = None) -> None:
        if self.train_graphs:
            return
        graphs = self.load_graphs()
        src = str(self.file()) if self.source == "file" else f"{self.name} (generated)"
        if len(graphs) < 2:
            raise DataError(f"{len(graphs)} graph(s): at least 2 are needed (one for training, one for the test split)",
                            file=src)
        train_graphs, test_graphs = gdss_split(graphs)
        self.train_set = graphs_to_tensors(train_graphs, self.max_nodes, self.max_feat, src,
                                           first_index=len(test_graphs))
        self.test_set = graphs_to_tensors(test_graphs, self.max_nodes, self.max_feat, src)
        self.train_graphs, self.test_graphs = train_graphs, test_graphs
        self.val_set = self.test_set
        print(f"workbench: {src}: {len(self.train_set)} training / {len(self.test_set)} test graphs "
              "(GDSS split: first 20 % test)", file=sys.stderr)

    def reference(self) -> list[nx.Graph]:
        """The test graphs (GDSS evaluates against the test split)."""
        self.setup()
        return self.test_graphs

    def save_samples(self, samples: Any, directory: str) -> list[Path]:
        out = Path(directory)
        graphs = tensors_to_graphs(samples["adj"], None)
        data = {"name": f"{self.name} samples", "graphs": [
            {"num_nodes": G.number_of_nodes(), "edges": sorted([min(u, v), max(u, v)] for u, v in
                                                               nx.convert_node_labels_to_integers(G).edges())}
            for G in graphs]}
        write_json(out / "graphs.json", data)
        save_tensors(out / "samples.pt", samples)
        return [out / "graphs.json", out / "samples.pt"]

    def plot_samples(self, samples: Any, path: str) -> Path:
        from .plots import plot_graphs

        return plot_graphs(tensors_to_graphs(samples["adj"]), self.reference(), path)


class MoleculeDataModule(_GraphDataModuleBase):
    """QM9 or ZINC250k from a SMILES CSV, kekulized as GDSS; preprocessing is cached as ``.npz``.

    Splits: ZINC250k uses the published test indices (``valid_idx_zinc250k.json``). The QM9 copy
    under ``$WORKBENCH_DATA`` is shuffled, so GDSS's index file does not apply to it: by default
    a deterministic split is used (a permutation with ``split_seed`` = 42; its first ``test_size``
    rows are the test set: QM9's default 13,082 is the size of the published split). With
    ``limit``, the head of the file keeps the test share ``test_size`` / (rows in the file). Pass
    ``test_index`` (e.g. ``valid_idx_qm9.json``) when reading the original GDB-ordered CSV.
    A CSV of one's own (``path``) does not inherit the dataset's published split: unless
    ``test_index``, ``test_size`` or ``test_fraction`` is given, a random ``test_fraction`` = 0.1
    of its rows (at least one) is the test set. A split that leaves no training or no test molecule
    is refused; the split sizes are printed to stderr.

    Invalid SMILES and molecules outside the vocabulary or over ``max_atoms`` are dropped with
    one counted warning (:class:`~workbench.errors.InputWarning`, repeated when the cached encoding
    is reused) that names the file, counts each reason, gives the first lines and the file listing
    every dropped row (next to the cache). If every molecule is dropped it is an error.

    Args:
        dataset: ``"qm9"`` or ``"zinc250k"`` (sets defaults for the rest).
        path, smiles_column, atoms, max_atoms: override for a user's own CSV.
        test_index, test_size, test_fraction, split_seed: the test split (a JSON file of 0-based row
            indices, or a random ``test_size`` rows / ``test_fraction`` of the rows drawn with
            ``split_seed``).
        train_subset: use only this many training molecules (a fixed random subset).
        limit: read only the first ``limit`` rows (quick experiments).
    """

    def __init__(self, dataset: str = "qm9", path: str | None = None, smiles_column: str | None = None,
                 atoms: Sequence[str] | None = None, max_atoms: int | None = None, test_index: str | None = None,
                 test_size: int | None = None, test_fraction: float | None = None, split_seed: int = 42,
                 train_subset: int | None = None, limit: int | None = None, cache: bool = True,
                 batch_size: int = 1024, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in MOLECULES:
            raise ConfigError(f"config key 'datamodule.dataset': unknown molecule dataset {dataset!r}; choose one "
                              f"of {sorted(MOLECULES)}")
        spec = MOLECULES[dataset]
        self.dataset = dataset
        default = data_root() / "graphs" / spec["file"]
        self.path = Path(path) if path else default
        own = path is not None and str(path) != "" and self.path.resolve() != default.resolve()
        self.column = smiles_column or spec["column"]
        if atoms is not None and (isinstance(atoms, str) or not all(isinstance(a, str) and a for a in atoms)):
            raise ConfigError(f"config key 'datamodule.atoms' must be a list of element symbols, got {atoms!r}")
        self.atoms = tuple(atoms or spec["atoms"])
        self.max_atoms = check_int(max_atoms or spec["max_atoms"], "datamodule.max_atoms", minimum=1)
        test_size = check_int(test_size, "datamodule.test_size", minimum=1, allow_none=True)
        test_fraction = check_number(test_fraction, "datamodule.test_fraction", minimum=0.0, maximum=1.0,
                                     exclusive_minimum=True, allow_none=True)
        if test_fraction == 1.0:
            raise ConfigError("config key 'datamodule.test_fraction' must be < 1 (some molecules must be left "
                              "for training), got 1")
        given = [k for k, v in (("test_index", test_index or None), ("test_size", test_size),
                                ("test_fraction", test_fraction)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"config keys {' and '.join('datamodule.' + k for k in given)} both set the test "
                              "split; set only one")
        if given:  # the user's own split
            self.test_index, self.test_size, self.test_fraction = test_index or None, test_size, test_fraction
        elif own:  # a CSV of one's own: the published split of `dataset` does not apply to it
            self.test_index, self.test_size, self.test_fraction = None, None, 0.1
        else:
            self.test_index, self.test_size, self.test_fraction = spec["test_index"], spec["test_size"], None
        self.split_seed = check_int(split_seed, "datamodule.split_seed")
        self.train_subset = check_int(train_subset, "datamodule.train_subset", minimum=1, allow_none=True)
        self.limit = check_int(limit, "datamodule.limit", minimum=1, allow_none=True)
        self.cache = bool(cache)
        self.train_smiles: list[str] = []
        self.test_smiles: list[str] = []

    # -- preprocessing --------------------------------------------------------------------------
    def _cache_file(self) -> Path:
        st = self.path.stat()
        key = json.dumps([str(self.path.resolve()), st.st_size, int(st.st_mtime), self.column, self.atoms,
                          self.max_atoms, self.limit, 2])
        return cache_dir() / "graphs" / f"{self.dataset}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def encode_all(self) -> dict[str, np.ndarray]:
        """Encode every row (cached). Returns arrays ``types [n, N]``, ``adj [n, N, N]`` (uint8),
        ``row`` (CSV row of each kept molecule) and ``smiles`` (canonical), and the dropped rows
        (``dropped_row``, ``dropped_smiles``, ``dropped_reason``). Drops are reported by
        :meth:`report_drops` (an error if nothing is left, else a warning), also on a cache hit."""
        if not self.path.exists():
            raise DataFileNotFound("SMILES file not found (set WORKBENCH_DATA or datamodule.path)", file=self.path)
        cache = self._cache_file()
        if self.cache and cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            self.report_drops(out)
            return out
        from .io import canonical_smiles

        smiles = read_smiles_csv(self.path, self.column, self.limit)
        types, adjs, rows, canon = [], [], [], []
        dropped: list[tuple[int, str, str]] = []
        for i, s in enumerate(tqdm(smiles, desc=f"encoding {self.path.name}", mininterval=2, disable=None)):
            try:
                t, a = encode_molecule(s, self.atoms, self.max_atoms)
            except MoleculeError as e:
                dropped.append((i, s, e.reason + (f":{e.detail}" if e.detail else "")))
                continue
            types.append(t.astype(np.int8))
            adjs.append(a.astype(np.uint8))
            rows.append(i)
            canon.append(canonical_smiles(s))
        N = self.max_atoms
        out = {"types": np.stack(types) if types else np.zeros((0, N), np.int8),
               "adj": np.stack(adjs) if adjs else np.zeros((0, N, N), np.uint8),
               "row": np.asarray(rows, dtype=np.int64),
               "smiles": np.asarray(canon, dtype=np.str_), "n_rows": np.asarray(len(smiles)),
               "dropped_row": np.asarray([d[0] for d in dropped], dtype=np.int64),
               "dropped_smiles": np.asarray([d[1] for d in dropped], dtype=np.str_),
               "dropped_reason": np.asarray([d[2] for d in dropped], dtype=np.str_)}
        self.report_drops(out)  # before caching: an all-dropped encoding is an error, not a cache entry
        if self.cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + ".tmp.npz")
            np.savez_compressed(tmp, **out)
            tmp.replace(cache)
        return out

    def dropped_file(self) -> Path:
        """Where the full list of dropped rows is written (next to the cached encoding)."""
        cache = self._cache_file()
        return cache.with_name(cache.stem + ".dropped.csv")

    def report_drops(self, enc: dict[str, np.ndarray]) -> None:
        """All molecules dropped -> :class:`DataError` counting each reason; some dropped ->
        :class:`InputWarning` with the count, the first lines and the file listing them all."""
        reasons = [str(r) for r in enc.get("dropped_reason", np.zeros(0, np.str_))]
        if not reasons:
            return
        n_rows, kept = int(enc["n_rows"]), len(enc["row"])
        counts: dict[str, int] = {}
        outside: set[str] = set()
        for r in reasons:
            kind, _, detail = r.partition(":")
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "atom" and detail:
                outside.add(detail)
        words = []
        for kind, k in counts.items():
            what = MOLECULE_DROP_REASONS.get(kind, kind)
            if kind == "too_many_atoms":
                what = f"more than max_atoms={self.max_atoms} heavy atoms"
            elif kind == "atom":
                what = f"atoms outside the vocabulary {list(self.atoms)} ({', '.join(sorted(outside))})"
            words.append(f"{k} with {what}" if kind in ("too_many_atoms", "atom", "bond") else f"{k} {what}")
        lines = first_rows([int(i) + 2 for i in enc["dropped_row"]])  # file lines: the header is line 1
        if kept == 0:
            raise DataError(f"all {n_rows} molecules in column {self.column!r} were dropped: {'; '.join(words)} "
                            f"(lines {lines}); check datamodule.smiles_column, atoms and max_atoms", file=self.path)
        listing = self.dropped_file()
        try:
            with atomic_write(listing) as f:  # creates the folder
                f.write("row,line,reason,smiles\n")
                for i, s, r in zip(enc["dropped_row"], enc["dropped_smiles"], reasons):
                    f.write(f"{int(i)},{int(i) + 2},{r},{json.dumps(str(s))}\n")
            where = f"the full list is in {listing}"
        except OSError as e:
            where = f"the full list could not be written to {listing} ({e})"
        warn_input(f"{self.path}: dropped {len(reasons)} of {n_rows} molecules: {'; '.join(words)} "
                   f"(lines {lines}); {where}")

    def _test_rows(self, n_rows: int) -> np.ndarray:
        """CSV rows (0-based, of the rows read) of the test split."""
        if self.test_index:
            p = Path(self.test_index)
            if not p.is_absolute() and not p.exists():
                p = data_root() / "graphs" / p
            if not p.exists():
                raise DataFileNotFound("test index file not found (datamodule.test_index; relative names are "
                                       "also looked up under $WORKBENCH_DATA/graphs)", file=p)
            try:
                with open(p, encoding="utf-8") as f:
                    idx = json.load(f)
                if isinstance(idx, dict):
                    idx = idx.get("valid_idxs", [])
                idx = np.asarray([int(i) for i in idx], dtype=np.int64)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
                raise GraphFormatError("not a JSON list of row indices (or an object with a 'valid_idxs' list) "
                                       f"({_one_line(e)})", file=p) from e
            total = n_rows if self.limit is None else len(read_smiles_csv(self.path, self.column))
            bad = idx[(idx < 0) | (idx >= total)]
            if len(bad):
                raise DataError(f"{len(bad)} of {len(idx)} test indices are outside the {total} rows (0..{total - 1}) "
                                f"of {self.path}: {first_rows(bad.tolist())}", file=p)
            return idx[idx < n_rows]  # with `limit`, the indices beyond the head read are not in it
        if self.test_fraction is not None:
            size = max(1, int(round(self.test_fraction * n_rows)))
        else:
            size = int(self.test_size)
            if self.limit is not None:
                # test_size is that of the whole file: a head of it keeps the same test share
                total = len(read_smiles_csv(self.path, self.column))
                size = max(1, int(round(size * n_rows / total)))
        if size >= n_rows:
            raise DataError(f"a test split of {size} rows leaves no training rows out of {n_rows}: set a smaller "
                            "datamodule.test_size, or datamodule.test_fraction", file=self.path)
        perm = np.random.default_rng(self.split_seed).permutation(n_rows)
        return np.sort(perm[:size])

    def _split_words(self) -> str:
        if self.test_index:
            return f"test rows from {self.test_index}"
        if self.test_fraction is not None:
            return f"test_fraction={self.test_fraction:g}, split_seed={self.split_seed}"
        return f"test_size={self.test_size}, split_seed={self.split_seed}"

    def setup(self, stage: str | None = None) -> None:
        if self.train_smiles:
            return
        enc = self.encode_all()
        test_rows = set(self._test_rows(int(enc["n_rows"])).tolist())
        is_test = np.asarray([r in test_rows for r in enc["row"]], dtype=bool)
        train_idx, test_idx = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
        if not len(train_idx) or not len(test_idx):
            empty = "training" if not len(train_idx) else "test"
            raise DataError(f"the {empty} split is empty: {len(train_idx)} training / {len(test_idx)} test molecules "
                            f"of {len(enc['row'])} kept ({self._split_words()}); change datamodule.test_index, "
                            "test_size or test_fraction", file=self.path)
        self.train_smiles = enc["smiles"][train_idx].tolist()  # full train set: the novelty reference
        if self.train_subset:
            rng = np.random.default_rng(self.split_seed + 1)
            train_idx = np.sort(rng.choice(train_idx, size=min(self.train_subset, len(train_idx)), replace=False))
        self.test_smiles = enc["smiles"][test_idx].tolist()
        self.train_set = self._dataset(enc, train_idx)
        self.test_set = self._dataset(enc, test_idx)
        self.val_set = self._dataset(enc, test_idx[: min(len(test_idx), 2 * self.batch_size)])
        print(f"workbench: {self.path}: {len(self.train_set)} training"
              f"{f' (subset of {len(self.train_smiles)})' if self.train_subset else ''} / {len(test_idx)} test "
              f"molecules ({self._split_words()})", file=sys.stderr)

    def _dataset(self, enc: dict[str, np.ndarray], idx: np.ndarray) -> DenseGraphDataset:
        types = torch.as_tensor(enc["types"][idx]).long()
        flags = (types >= 0).float()
        x = torch.nn.functional.one_hot(types.clamp_min(0), len(self.atoms)).float() * flags[..., None]
        adj = torch.as_tensor(enc["adj"][idx]).float()
        return DenseGraphDataset(x, adj, flags)

    # -- outputs ------------------------------------------------------------------------------------
    def reference(self) -> dict[str, list[str]]:
        self.setup()
        return {"train": self.train_smiles, "test": self.test_smiles}

    def decode(self, samples: Any) -> list:
        """Generated states -> GDSS-decoded molecules (:class:`io.Decoded`)."""
        return decode_samples(samples, self.atoms)

    def save_samples(self, samples: Any, directory: str) -> list[Path]:
        out = Path(directory)
        mols = [d.mol for d in self.decode(samples)]
        files = [write_smiles(mols, out / "samples.smi"), write_sdf(mols, out / "samples.sdf")]
        save_tensors(out / "samples.pt", samples)
        return files + [out / "samples.pt"]

    def plot_samples(self, samples: Any, path: str) -> Path:
        from .plots import plot_molecules

        return plot_molecules([d.mol for d in self.decode(samples)][:16], path)


def quantize_atoms(x: torch.Tensor) -> torch.Tensor:
    """GDSS's node decoding: features are binarised at 0.5; a node with none set is the 'virtual'
    padding type (no atom), else its type is the first set feature. Returns indices, -1 = no atom."""
    on = (x > 0.5).float()
    return torch.where(on.sum(-1) > 0, on.argmax(-1), torch.full_like(x[..., 0], -1, dtype=torch.long))


def quantize_bonds(adj: torch.Tensor) -> torch.Tensor:
    """GDSS's bond decoding: thresholds 0.5 / 1.5 / 2.5 -> orders 0, 1, 2, 3."""
    a = adj.detach()
    return (a >= 0.5).long() + (a >= 1.5).long() + (a >= 2.5).long()


def decode_samples(samples: Any, atoms: Sequence[str]) -> list:
    """Generated molecule states ``{"x", "adj"}`` -> GDSS-decoded molecules (:class:`io.Decoded`)."""
    types = quantize_atoms(samples["x"].detach().cpu())
    orders = quantize_bonds(samples["adj"].detach().cpu()).numpy()
    return [decode_molecule(types[i].numpy(), orders[i], atoms) for i in range(len(types))]

"""Datasets and datamodules of the graphs domain (dense, padded batches with node masks).

A batch is ``{"x": {"x": X [B, N, F], "adj": A [B, N, N]}, "mask": flags [B, N]}``; the
datasets also convert items to ``torch_geometric.data.Data`` (:func:`to_pyg`).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from workbench.data import DomainDataModule, cache_dir, data_root, save_tensors

from .io import (
    QM9_ATOMS, ZINC_ATOMS, MoleculeError, decode_molecule, gdss_split, generate_community_small, generate_grid,
    read_graph_json, read_smiles_csv, encode_molecule, write_sdf, write_smiles,
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
                      source: str = "graphs") -> DenseGraphDataset:
    """GDSS's generic-graph encoding: padded 0/1 adjacency and one-hot node degree features.

    Graphs with more than ``max_nodes`` nodes or a degree >= ``max_feat`` are rejected with a
    counted error; empty graphs are skipped with a counted warning.
    """
    kept, empty, too_big, too_deg = [], 0, 0, 0
    for G in graphs:
        n = G.number_of_nodes()
        if n == 0:
            empty += 1
            continue
        if n > max_nodes:
            too_big += 1
            continue
        if max(dict(G.degree()).values(), default=0) >= max_feat:
            too_deg += 1
            continue
        kept.append(G)
    if too_big or too_deg:
        raise ValueError(f"{source}: {too_big} graph(s) exceed max_nodes={max_nodes} and {too_deg} have a "
                         f"degree >= max_feat={max_feat}; raise the limits")
    if empty:
        warnings.warn(f"{source}: skipped {empty} empty graph(s)", stacklevel=2)
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
        n_graphs, gen_seed: size and seed of a generated set.
    """

    def __init__(self, name: str = "community_small", source: str = "generate", path: str | None = None,
                 n_graphs: int = 100, gen_seed: int = 0, max_nodes: int | None = None, max_feat: int | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if name not in GENERIC:
            raise ValueError(f"unknown graph dataset {name!r}; choose one of {sorted(GENERIC)}")
        if source not in ("file", "generate"):
            raise ValueError(f"source must be 'file' or 'generate', got {source!r}")
        if source == "generate" and name not in ("community_small", "grid"):
            raise ValueError(f"only community_small and grid can be generated, not {name!r}")
        spec = GENERIC[name]
        self.name, self.source, self.path = name, source, path
        self.n_graphs, self.gen_seed = int(n_graphs), int(gen_seed)
        self.max_nodes = int(max_nodes or spec["max_nodes"])
        self.max_feat = int(max_feat or spec["max_feat"])
        self.train_graphs: list[nx.Graph] = []
        self.test_graphs: list[nx.Graph] = []

    def load_graphs(self) -> list[nx.Graph]:
        if self.source == "generate":
            gen = generate_community_small if self.name == "community_small" else generate_grid
            return gen(self.n_graphs, seed=self.gen_seed)
        path = Path(self.path) if self.path else data_root() / "graphs" / GENERIC[self.name]["file"]
        if not path.exists():
            raise FileNotFoundError(f"graph file not found: {path} (set WORKBENCH_DATA, or use source=generate)")
        return read_graph_json(path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_graphs:
            return
        graphs = self.load_graphs()
        self.train_graphs, self.test_graphs = gdss_split(graphs)
        src = f"{self.name} ({self.source})"
        self.train_set = graphs_to_tensors(self.train_graphs, self.max_nodes, self.max_feat, src)
        self.test_set = graphs_to_tensors(self.test_graphs, self.max_nodes, self.max_feat, src)
        self.val_set = self.test_set

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
        from workbench.data import write_json

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

    Invalid SMILES and molecules outside the vocabulary or over ``max_atoms`` are dropped with
    one counted warning that names the file and the reasons.

    Args:
        dataset: ``"qm9"`` or ``"zinc250k"`` (sets defaults for the rest).
        path, smiles_column, atoms, max_atoms: override for a user's own CSV.
        test_index, test_size, split_seed: the test split (a file of row indices, or a random
            ``test_size`` rows of the whole file drawn with ``split_seed``).
        train_subset: use only this many training molecules (a fixed random subset).
        limit: read only the first ``limit`` rows (quick experiments).
    """

    def __init__(self, dataset: str = "qm9", path: str | None = None, smiles_column: str | None = None,
                 atoms: Sequence[str] | None = None, max_atoms: int | None = None, test_index: str | None = None,
                 test_size: int | None = None, split_seed: int = 42, train_subset: int | None = None,
                 limit: int | None = None, cache: bool = True, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in MOLECULES:
            raise ValueError(f"unknown molecule dataset {dataset!r}; choose one of {sorted(MOLECULES)}")
        spec = MOLECULES[dataset]
        self.dataset = dataset
        self.path = Path(path) if path else data_root() / "graphs" / spec["file"]
        self.column = smiles_column or spec["column"]
        self.atoms = tuple(atoms or spec["atoms"])
        self.max_atoms = int(max_atoms or spec["max_atoms"])
        self.test_index = test_index if test_index is not None else spec["test_index"]
        self.test_size = test_size if test_size is not None else spec["test_size"]
        self.split_seed, self.train_subset, self.limit, self.cache = int(split_seed), train_subset, limit, cache
        self.train_smiles: list[str] = []
        self.test_smiles: list[str] = []

    # -- preprocessing --------------------------------------------------------------------------
    def _cache_file(self) -> Path:
        st = self.path.stat()
        key = json.dumps([str(self.path.resolve()), st.st_size, int(st.st_mtime), self.column, self.atoms,
                          self.max_atoms, self.limit, 1])
        return cache_dir() / "graphs" / f"{self.dataset}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def encode_all(self) -> dict[str, np.ndarray]:
        """Encode every row (cached). Returns arrays ``types [n, N]``, ``adj [n, N, N]`` (uint8),
        ``row`` (CSV row of each kept molecule) and ``smiles`` (canonical)."""
        if not self.path.exists():
            raise FileNotFoundError(f"SMILES file not found: {self.path} (set WORKBENCH_DATA or pass path=)")
        cache = self._cache_file()
        if self.cache and cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        from .io import canonical_smiles

        smiles = read_smiles_csv(self.path, self.column, self.limit)
        types, adjs, rows, canon, reasons = [], [], [], [], {}
        for i, s in enumerate(tqdm(smiles, desc=f"encoding {self.path.name}", mininterval=2)):
            try:
                t, a = encode_molecule(s, self.atoms, self.max_atoms)
            except MoleculeError as e:
                why = str(e).split(" ", 1)[0] if str(e).startswith("invalid") else str(e).split(" has ")[-1][:40]
                reasons[why] = reasons.get(why, 0) + 1
                continue
            types.append(t.astype(np.int8))
            adjs.append(a.astype(np.uint8))
            rows.append(i)
            canon.append(canonical_smiles(s))
        dropped = len(smiles) - len(rows)
        if dropped:
            warnings.warn(f"{self.path}: dropped {dropped} of {len(smiles)} molecules ({reasons})", stacklevel=2)
        out = {"types": np.stack(types), "adj": np.stack(adjs), "row": np.asarray(rows, dtype=np.int64),
               "smiles": np.asarray(canon, dtype=np.str_), "n_rows": np.asarray(len(smiles))}
        if self.cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + ".tmp.npz")
            np.savez_compressed(tmp, **out)
            tmp.replace(cache)
        return out

    def _test_rows(self, n_rows: int) -> np.ndarray:
        if self.test_index:
            p = Path(self.test_index)
            if not p.is_absolute() and not p.exists():
                p = data_root() / "graphs" / p
            with open(p, encoding="utf-8") as f:
                idx = json.load(f)
            if isinstance(idx, dict):
                idx = idx.get("valid_idxs", [])
            return np.asarray([int(i) for i in idx], dtype=np.int64)
        if self.test_size is None:
            raise ValueError(f"{self.path}: no test split: pass test_size= or test_index=")
        size = int(self.test_size)
        if self.limit is not None:
            # test_size is that of the whole file: a head of it keeps the same test share
            total = len(read_smiles_csv(self.path, self.column))
            size = max(1, int(round(size * n_rows / total)))
        if size >= n_rows:
            raise ValueError(f"{self.path}: a test split of {size} leaves no training rows out of {n_rows}; "
                             "pass a smaller test_size= or a test_index=")
        perm = np.random.default_rng(self.split_seed).permutation(n_rows)
        return np.sort(perm[:size])

    def setup(self, stage: str | None = None) -> None:
        if self.train_smiles:
            return
        enc = self.encode_all()
        test_rows = set(self._test_rows(int(enc["n_rows"])).tolist())
        is_test = np.asarray([r in test_rows for r in enc["row"]])
        train_idx, test_idx = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
        self.train_smiles = enc["smiles"][train_idx].tolist()  # full train set: the novelty reference
        if self.train_subset:
            rng = np.random.default_rng(self.split_seed + 1)
            train_idx = np.sort(rng.choice(train_idx, size=min(self.train_subset, len(train_idx)), replace=False))
        self.test_smiles = enc["smiles"][test_idx].tolist()
        self.train_set = self._dataset(enc, train_idx)
        self.test_set = self._dataset(enc, test_idx)
        self.val_set = self._dataset(enc, test_idx[: min(len(test_idx), 2 * self.batch_size)])

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

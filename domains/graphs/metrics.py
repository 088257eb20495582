"""Metrics of the graphs domain, computed as GDSS computed them.

Generic graphs (GraphRNN / GDSS ``eval_graph_list``), all squared MMD (biased V-statistic):
* degree: normalised degree histograms, Gaussian-EMD kernel with sigma = 1;
* clustering: 100-bin histograms of clustering coefficients on [0, 1], Gaussian-EMD kernel with
  sigma = 0.1 and ground distance |i - j| / 100;
* orbit: per graph, the mean over nodes of the 15 graphlet-orbit counts (graphlets up to 4 nodes,
  ORCA's ``node 4`` output), Gaussian (L2) kernel with sigma = 30.
EMD between two histograms on the same 1-D support with ground distance |i - j| / s is
(1/s) * sum |CDF_x - CDF_y|, the closed form of what pyemd computes there.

Molecules: validity without correction, uniqueness, novelty (against the training SMILES),
NSPDK MMD (Costa & De Grave 2010; EDeN's vectoriser with complexity 4, linear kernel) and FCD
(Preuer et al. 2018, ChemNet from the ``fcd_torch`` package, which ships its weights).
"""
from __future__ import annotations

import math
import zlib
from collections import defaultdict

from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np

__all__ = [
    "emd_1d", "gaussian_emd", "gaussian", "mmd", "degree_mmd", "clustering_mmd", "orbit_counts", "orbit_mmd",
    "generic_graph_metrics", "nspdk_features", "nspdk_mmd", "fcd", "molecule_metrics", "GraphMetrics",
]


# -- kernels and MMD ---------------------------------------------------------------------------------
def _pad(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(x), len(y))
    return np.pad(x, (0, n - len(x))), np.pad(y, (0, n - len(y)))


def emd_1d(x: np.ndarray, y: np.ndarray, distance_scaling: float = 1.0) -> float:
    """Earth mover's distance between two histograms of equal mass on bins 0, 1, 2, ..."""
    x, y = _pad(np.asarray(x, float), np.asarray(y, float))
    return float(np.abs(np.cumsum(x) - np.cumsum(y)).sum() / distance_scaling)


def gaussian_emd(x: np.ndarray, y: np.ndarray, sigma: float = 1.0, distance_scaling: float = 1.0) -> float:
    d = emd_1d(x, y, distance_scaling)
    return math.exp(-d * d / (2 * sigma * sigma))


def gaussian(x: np.ndarray, y: np.ndarray, sigma: float = 1.0) -> float:
    x, y = _pad(np.asarray(x, float), np.asarray(y, float))
    d = float(np.linalg.norm(x - y))
    return math.exp(-d * d / (2 * sigma * sigma))


def mmd(a: Sequence[np.ndarray], b: Sequence[np.ndarray], kernel: Callable[..., float], is_hist: bool = True,
        **kw: Any) -> float:
    """Squared MMD, mean k(a, a') + mean k(b, b') - 2 mean k(a, b) (histograms normalised first)."""
    if not a or not b:
        return float("nan")
    if is_hist:
        a = [np.asarray(v, float) / max(np.sum(v), 1e-12) for v in a]
        b = [np.asarray(v, float) / max(np.sum(v), 1e-12) for v in b]

    def disc(p: Sequence[np.ndarray], q: Sequence[np.ndarray]) -> float:
        return sum(kernel(u, v, **kw) for u in p for v in q) / (len(p) * len(q))

    return disc(a, a) + disc(b, b) - 2 * disc(a, b)


def _nonempty(graphs: Sequence[nx.Graph]) -> list[nx.Graph]:
    return [g for g in graphs if g.number_of_nodes() > 0]


def degree_mmd(ref: Sequence[nx.Graph], gen: Sequence[nx.Graph]) -> float:
    h = lambda gs: [np.asarray(nx.degree_histogram(g), float) for g in _nonempty(gs)]  # noqa: E731
    return mmd(h(ref), h(gen), gaussian_emd, sigma=1.0)


def clustering_mmd(ref: Sequence[nx.Graph], gen: Sequence[nx.Graph], bins: int = 100) -> float:
    def h(gs: Sequence[nx.Graph]) -> list[np.ndarray]:
        return [np.histogram(list(nx.clustering(g).values()), bins=bins, range=(0.0, 1.0))[0].astype(float)
                for g in _nonempty(gs)]

    return mmd(h(ref), h(gen), gaussian_emd, sigma=0.1, distance_scaling=bins)


# -- graphlet orbits (up to 4 nodes) --------------------------------------------------------------------
def _connected_subsets(adj: list[set[int]], k: int):
    """Every connected induced k-node subset once (ESU enumeration, Wernicke 2006)."""
    def extend(sub: list[int], ext: set[int], root: int, nbhd: set[int]):
        if len(sub) == k:
            yield sub
            return
        ext = set(ext)
        while ext:
            w = ext.pop()
            new = {u for u in adj[w] if u > root and u not in nbhd}
            yield from extend(sub + [w], ext | new, root, nbhd | adj[w] | {w})

    for v in range(len(adj)):
        yield from extend([v], {u for u in adj[v] if u > v}, v, adj[v] | {v})


def orbit_counts(G: nx.Graph) -> np.ndarray:
    """Per-node counts of the 15 orbits of graphlets with 2-4 nodes (Przulj 2007), ``[n, 15]``.

    Orbits: 0 edge; 1, 2 path P3 (end, middle); 3 triangle; 4, 5 path P4 (end, inner);
    6, 7 star (leaf, centre); 8 cycle C4; 9, 10, 11 paw (pendant, triangle degree-2, degree-3);
    12, 13 diamond (degree 2, degree 3); 14 K4. Counts are over induced subgraphs.
    """
    nodes = list(G.nodes())
    index = {u: i for i, u in enumerate(nodes)}
    adj = [set() for _ in nodes]
    for u, v in G.edges():
        if u != v:
            adj[index[u]].add(index[v])
            adj[index[v]].add(index[u])
    out = np.zeros((len(nodes), 15), dtype=np.int64)
    for i, a in enumerate(adj):
        out[i, 0] = len(a)
    for sub in _connected_subsets(adj, 3):
        deg = {u: sum(w in adj[u] for w in sub) for u in sub}
        if all(d == 2 for d in deg.values()):
            for u in sub:
                out[u, 3] += 1
        else:
            for u, d in deg.items():
                out[u, 2 if d == 2 else 1] += 1
    for sub in _connected_subsets(adj, 4):
        deg = {u: sum(w in adj[u] for w in sub) for u in sub}
        e = sum(deg.values()) // 2
        ds = sorted(deg.values())
        for u, d in deg.items():
            if e == 3:
                orbit = (7 if d == 3 else 6) if ds == [1, 1, 1, 3] else (4 if d == 1 else 5)
            elif e == 4:
                orbit = 8 if ds == [2, 2, 2, 2] else {1: 9, 2: 10, 3: 11}[d]
            elif e == 5:
                orbit = 13 if d == 3 else 12
            else:
                orbit = 14
            out[u, orbit] += 1
    return out


def orbit_mmd(ref: Sequence[nx.Graph], gen: Sequence[nx.Graph]) -> float:
    def feats(gs: Sequence[nx.Graph]) -> list[np.ndarray]:
        return [orbit_counts(g).sum(0) / g.number_of_nodes() for g in _nonempty(gs)]

    return mmd(feats(ref), feats(gen), gaussian, is_hist=False, sigma=30.0)


def generic_graph_metrics(gen: Sequence[nx.Graph], ref: Sequence[nx.Graph]) -> dict[str, float]:
    """GDSS's three MMDs (degree, clustering, orbit) of generated graphs against the test graphs."""
    return {"degree_mmd": degree_mmd(ref, gen), "clustering_mmd": clustering_mmd(ref, gen),
            "orbit_mmd": orbit_mmd(ref, gen)}


# -- NSPDK -------------------------------------------------------------------------------------------------
def nspdk_features(G: nx.Graph, complexity: int = 4, nbits: int = 16) -> dict[int, float]:
    """Sparse NSPDK feature vector of a labelled graph (node 'label', edge 'label').

    EDeN's construction: edges become nodes (so distances double), each root gets, for every
    radius, a hash of the (label, degree) multisets at each distance; pairs of roots at distance
    d <= complexity with radius r <= complexity give features hash(r, d, hash_u, hash_v) and the
    context feature hash(hash_u, r, d); each (r, d) block is normalised, then the whole vector.
    Features are hashed into 2^nbits buckets (EDeN's default 16, as GDSS used it).
    """
    mask = (1 << nbits) - 1

    def _h(*items: Any) -> int:
        return (hash(items) & mask) + 1

    def _label_hash(label: Any) -> int:
        return (zlib.crc32(str(label).encode()) & mask) + 1

    E = nx.Graph()
    for u, data in G.nodes(data=True):
        E.add_node(("n", u), hlabel=_label_hash(data.get("label", "")), node=True)
    for u, v, data in G.edges(data=True):
        if u == v:
            continue
        w = ("e", u, v)
        E.add_node(w, hlabel=_label_hash(data.get("label", "")), node=False)
        E.add_edge(w, ("n", u))
        E.add_edge(w, ("n", v))
    depth = 2 * complexity
    roots = [n for n, d in E.nodes(data=True) if d["node"]]
    levels, neigh_hash = {}, {}
    for r in roots:
        dist = nx.single_source_shortest_path_length(E, r, cutoff=depth)
        by_d: dict[int, list] = defaultdict(list)
        for v, d in dist.items():
            by_d[d].append(v)
        levels[r] = by_d
        running, hashes = 0xAAAAAAAA, []
        for i, d in enumerate(sorted(by_d)):
            level = sorted(_h(E.nodes[v]["hlabel"], E.degree(v)) for v in by_d[d])
            running ^= hash((running, _h(*level), i))
            hashes.append((running & mask) + 1)
        neigh_hash[r] = hashes
    feats: dict[tuple[int, int], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for v in roots:
        for d in range(0, depth + 2, 2):
            for u in levels[v].get(d, []):
                if not E.nodes[u]["node"]:
                    continue
                for r in range(0, depth + 2, 2):
                    hv, hu = neigh_hash[v], neigh_hash[u]
                    if r >= len(hv) or r >= len(hu):
                        continue
                    a, b = sorted((hv[r], hu[r]))
                    block = feats[(r // 2, d // 2)]
                    block[_h(a, b, r, d)] += 1.0
                    block[_h(hu[r], r, d)] += 1.0
    vec: dict[int, float] = defaultdict(float)
    for block in feats.values():
        norm = math.sqrt(sum(c * c for c in block.values()))
        for k, c in block.items():
            vec[k] += c / norm
    total = math.sqrt(sum(c * c for c in vec.values())) or 1.0
    return {k: c / total for k, c in vec.items()}


def nspdk_mmd(ref: Sequence[nx.Graph], gen: Sequence[nx.Graph], nbits: int = 16) -> float:
    """Squared MMD with the linear NSPDK kernel: ||mean phi(ref) - mean phi(gen)||^2.

    Equal to GDSS's EDeN computation (``vectorize(graphs, complexity=4, discrete=True)``, linear
    kernel) up to hash collisions: identical to ~1e-14 with ``nbits=30`` on both sides; at the
    default 16 bits within about 1 %, the spread of EDeN's own value across Python hash seeds
    (EDeN hashes label strings with the salted ``hash``; this uses CRC-32, so it is reproducible).
    """
    def mean(gs: Sequence[nx.Graph]) -> dict[int, float]:
        acc: dict[int, float] = defaultdict(float)
        gs = _nonempty(gs)
        for g in gs:
            for k, v in nspdk_features(g, nbits=nbits).items():
                acc[k] += v / len(gs)
        return acc

    a, b = mean(ref), mean(gen)
    return float(sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in set(a) | set(b)))


def mol_to_nx(mol) -> nx.Graph:
    """An RDKit molecule as a labelled graph (atom symbols, integer bond orders), as GDSS's NSPDK input."""
    G = nx.Graph()
    for a in mol.GetAtoms():
        G.add_node(a.GetIdx(), label=a.GetSymbol())
    for b in mol.GetBonds():
        G.add_edge(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), label=int(b.GetBondTypeAsDouble()))
    return G


# -- molecules ----------------------------------------------------------------------------------------------
def fcd(gen_smiles: Sequence[str], ref_smiles: Sequence[str], device: str = "cpu", batch_size: int = 512) -> float:
    """Frechet ChemNet Distance with ``fcd_torch`` (weights ship with the package; no download)."""
    try:
        from fcd_torch import FCD
    except ImportError as e:  # pragma: no cover
        raise ImportError("FCD needs the fcd_torch package: pip install 'workbench[graphs]'") from e
    return float(FCD(device=device, n_jobs=1, batch_size=batch_size)(list(gen_smiles), list(ref_smiles)))


def molecule_metrics(decoded: Sequence[Any], train_smiles: Sequence[str], test_smiles: Sequence[str],
                     with_fcd: bool = True, with_nspdk: bool = True) -> dict[str, float]:
    """GDSS's molecule table: validity w/o correction, validity, uniqueness, novelty, NSPDK, FCD.

    ``decoded`` are :class:`io.Decoded` results. Validity w/o correction is over all samples; as in
    GDSS, uniqueness and novelty are fractions of the valid (corrected) molecules, novelty counted
    over unique molecules absent from the training set; NSPDK and FCD compare the valid molecules
    with the test molecules.
    """
    from rdkit import Chem

    n = len(decoded)
    mols = [d.mol for d in decoded if d.mol is not None]
    smiles = [Chem.MolToSmiles(m, isomericSmiles=False) for m in mols]
    unique = set(smiles)
    train = set(train_smiles)
    out = {
        "validity_wo_correction": sum(d.valid_without_correction for d in decoded) / max(n, 1),
        "validity": len(mols) / max(n, 1),
        "uniqueness": len(unique) / max(len(smiles), 1),
        "novelty": len(unique - train) / max(len(unique), 1),
    }
    if with_nspdk and mols:
        ref_mols = [Chem.MolFromSmiles(s) for s in test_smiles]
        out["nspdk_mmd"] = nspdk_mmd([mol_to_nx(m) for m in ref_mols if m is not None], [mol_to_nx(m) for m in mols])
    if with_fcd and len(smiles) > 1:
        out["fcd"] = fcd(smiles, list(test_smiles))
    return {k: float(v) for k, v in out.items()}


class GraphMetrics:
    """The adapter's metric function ``(samples, reference) -> dict``.

    Args:
        kind: ``"generic"`` (reference = test graphs) or ``"molecule"`` (reference = dict with
            ``train`` / ``test`` SMILES; needs ``atoms``).
        atoms: the atom vocabulary of a molecule dataset.
        with_fcd, with_nspdk: FCD and NSPDK are the slow molecule metrics; switch off for quick runs.
        max_reference: compare with at most this many test molecules (a fixed subset).
    """

    def __init__(self, kind: str = "generic", atoms: Sequence[str] | None = None, with_fcd: bool = True,
                 with_nspdk: bool = True, max_reference: int | None = None) -> None:
        if kind not in ("generic", "molecule"):
            raise ValueError(f"kind must be 'generic' or 'molecule', got {kind!r}")
        self.kind, self.atoms = kind, tuple(atoms or ())
        self.with_fcd, self.with_nspdk, self.max_reference = with_fcd, with_nspdk, max_reference

    def __call__(self, samples: dict, reference: Any) -> dict[str, float]:
        from workbench.errors import DataError

        if self.kind == "generic":
            from .data import tensors_to_graphs

            if not len(reference):  # every MMD would be NaN
                raise DataError("the test split holds no graphs to compare the samples with (check the data file "
                                "and the split)")
            return generic_graph_metrics(tensors_to_graphs(samples["adj"]), reference)
        from .data import decode_samples

        if not len(reference["test"]):  # NSPDK and FCD would be NaN
            raise DataError("the test split holds no molecules to compare the samples with (check "
                            "datamodule.test_index / test_size / test_fraction)")
        decoded = decode_samples(samples, self.atoms)
        test = list(reference["test"])
        if self.max_reference and len(test) > self.max_reference:
            rng = np.random.default_rng(0)
            test = [test[i] for i in sorted(rng.choice(len(test), self.max_reference, replace=False))]
        return molecule_metrics(decoded, reference["train"], test, self.with_fcd, self.with_nspdk)



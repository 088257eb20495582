"""Native formats of the graphs domain: JSON edge lists, SMILES CSV, RDKit molecules, SDF.

Molecules are encoded as GDSS does (Jo et al. 2022, following MoFlow): canonical SMILES
without stereochemistry, kekulized, no hydrogens; atoms one-hot over a vocabulary (QM9:
C N O F; ZINC250k: C N O F P S Cl Br I) and a single adjacency channel with bond orders
1 / 2 / 3 (0 = no bond).
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import networkx as nx
import numpy as np

from workbench.errors import DataError, first_rows, warn_input

__all__ = [
    "GraphFormatError", "DataFileNotFound", "MoleculeError", "MOLECULE_DROP_REASONS", "read_graph_json", "gdss_split",
    "generate_community_small", "generate_grid", "read_smiles_csv", "encode_molecule", "decode_molecule", "correct_valency",
    "largest_fragment", "write_sdf", "write_smiles", "QM9_ATOMS", "ZINC_ATOMS", "ATOM_VALENCY",
]

QM9_ATOMS = ("C", "N", "O", "F")
ZINC_ATOMS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
#: the valences GDSS checks when adding bonds (charged N+, O+, S+ allowed one more)
ATOM_VALENCY = {"C": 4, "N": 3, "O": 2, "F": 1, "P": 3, "S": 2, "Cl": 1, "Br": 1, "I": 1}


class GraphFormatError(DataError):
    """A graph or SMILES file that does not parse; the message names the file, where, and the problem."""


class DataFileNotFound(DataError, FileNotFoundError):
    """A data file that does not exist; the message names it and how it is looked up."""


class MoleculeError(ValueError):
    """A molecule that cannot be encoded (invalid SMILES, unknown atom, too many atoms).

    ``reason`` is one of :data:`MOLECULE_DROP_REASONS`' keys, for counted reports."""

    def __init__(self, message: str, reason: str = "invalid", detail: str = "") -> None:
        super().__init__(message)
        self.reason, self.detail = reason, detail


#: why a molecule is dropped while encoding (MoleculeError.reason -> words for messages)
MOLECULE_DROP_REASONS = {
    "invalid": "invalid SMILES",
    "empty": "empty molecule",
    "too_many_atoms": "more heavy atoms than max_atoms",
    "atom": "atoms outside the vocabulary",
    "bond": "bonds other than single/double/triple after kekulization",
}


# -- generic graphs ------------------------------------------------------------------------------
def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    path = str(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_graph_json(path: str | os.PathLike) -> list[nx.Graph]:
    """Read ``{"graphs": [{"num_nodes": n, "edges": [[u, v], ...]}, ...]}`` (optionally gzipped).

    Raises :class:`GraphFormatError` (a :class:`~workbench.errors.DataError`) naming the file and
    the graph for a missing, damaged or truncated file, an empty list, a negative node count or an
    edge outside the node range; self loops are removed with a counted warning."""
    if not Path(path).exists():
        raise DataFileNotFound("graph file not found", file=path)
    try:
        with _open_text(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, EOFError, zlib.error) as e:
        damaged = "truncated or damaged gzip file" if str(path).endswith(".gz") and not isinstance(
            e, (json.JSONDecodeError, UnicodeDecodeError)) else "not a readable JSON graph list"
        raise GraphFormatError(f"{damaged} ({_one_line(e)})", file=path) from e
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), list):
        raise GraphFormatError("expected a JSON object with a 'graphs' list", file=path)
    if not data["graphs"]:
        raise GraphFormatError("the 'graphs' list is empty: nothing to train on", file=path)
    graphs, loops = [], []
    for i, g in enumerate(data["graphs"]):
        try:
            n = int(g["num_nodes"])
            edges = [(int(u), int(v)) for u, v in g["edges"]]
        except (KeyError, TypeError, ValueError) as e:
            raise GraphFormatError(f"needs 'num_nodes' and a list of [u, v] 'edges' ({_one_line(e)})", file=path,
                                   where=f"graph {i}") from e
        if n < 0:
            raise GraphFormatError(f"num_nodes is negative ({n})", file=path, where=f"graph {i}")
        bad = [(u, v) for u, v in edges if not (0 <= u < n and 0 <= v < n)]
        if bad:
            raise GraphFormatError(f"{len(bad)} edge(s) outside the node range 0..{n - 1}, e.g. "
                                   f"{', '.join(map(str, bad[:3]))}", file=path, where=f"graph {i}")
        if any(u == v for u, v in edges):
            loops.append(i)
        G = nx.Graph()
        G.add_nodes_from(range(n))
        G.add_edges_from((u, v) for u, v in edges if u != v)
        graphs.append(G)
    if loops:
        warn_input(f"{path}: removed self loops from {len(loops)} of {len(graphs)} graphs (graphs "
                   f"{first_rows(loops)}); GDSS's adjacency has a zero diagonal")
    return graphs


def gdss_split(graphs: Sequence[nx.Graph], test_fraction: float = 0.2) -> tuple[list[nx.Graph], list[nx.Graph]]:
    """GDSS / GraphRNN split: test = the first ``int(0.2 * len)`` graphs (at least one), train = the
    rest (no shuffle)."""
    k = max(1, int(test_fraction * len(graphs)))
    return list(graphs[k:]), list(graphs[:k])


def _two_communities(max_nodes: int, rng: np.random.Generator, p_inter: float = 0.05) -> nx.Graph:
    """GraphRNN / GDSS community graph: 2 communities of max_nodes // 2 nodes, G(n, 0.7) each
    (networkx seeds 0 and 1, as the reference generator), bridges with p = 2 p_inter / size,
    at least one bridge."""
    size = max_nodes // 2
    p_bridge = p_inter * 2 / size
    G = nx.disjoint_union_all([nx.gnp_random_graph(size, 0.7, seed=i) for i in range(2)])
    a, b = list(range(size)), list(range(size, 2 * size))
    bridged = False
    for n1 in a:
        for n2 in b:
            if rng.random() < p_bridge:
                G.add_edge(n1, n2)
                bridged = True
    if not bridged:
        G.add_edge(a[0], b[0])
    return G


def generate_community_small(n: int = 100, seed: int = 0) -> list[nx.Graph]:
    """``n`` community-small graphs as GDSS generated them (12-20 nodes, 2 communities)."""
    rng = np.random.default_rng(seed)
    return [_two_communities(int(rng.choice(np.arange(12, 21))), rng) for _ in range(n)]


def generate_grid(n: int = 100, seed: int = 0) -> list[nx.Graph]:
    """``n`` 2-D grid graphs with m, n drawn from 10..19 (GDSS's grid set; up to 361 nodes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m, k = int(rng.integers(10, 20)), int(rng.integers(10, 20))
        out.append(nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, k)))
    return out


# -- molecules ----------------------------------------------------------------------------------------
def read_smiles_csv(path: str | os.PathLike, column: str = "smiles", limit: int | None = None) -> list[str]:
    """SMILES strings from a CSV (``.gz`` accepted) column ``column``, in file order.

    Raises :class:`GraphFormatError` naming the file for an empty or header-only file, a missing
    column (listing the columns there are) or a damaged / truncated file."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFound("SMILES file not found (set WORKBENCH_DATA or datamodule.path)", file=path)
    try:
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise GraphFormatError("the CSV file is empty (no header line, no rows)", file=path)
            if column not in reader.fieldnames:
                raise GraphFormatError(f"no column {column!r}; the columns are "
                                       f"{', '.join(repr(c) for c in reader.fieldnames)} "
                                       "(set datamodule.smiles_column)", file=path)
            out = []
            for row in reader:
                out.append((row[column] or "").strip())
                if limit is not None and len(out) >= limit:
                    break
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error) as e:
        raise GraphFormatError(f"cannot read the CSV file, truncated or damaged? ({_one_line(e)})", file=path) from e
    if not out:
        raise GraphFormatError(f"the CSV file has a header but no rows: no molecules in column {column!r}", file=path)
    return out


def _rdkit():
    try:
        from rdkit import Chem
    except ImportError as e:  # pragma: no cover - extra not installed
        raise ImportError("molecules need RDKit: pip install 'workbench[graphs]'") from e
    return Chem


def _quiet(fn):
    """Run ``fn`` with RDKit's log blocked (invalid SMILES and valence errors are expected there
    and reported by return values or exceptions); the caller's log settings are restored after."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _rdkit()
        from rdkit import rdBase

        with rdBase.BlockLogs():
            return fn(*args, **kwargs)

    return wrapper


@_quiet
def canonical_smiles(smiles: str) -> str | None:
    """RDKit canonical SMILES without stereochemistry, or None if it does not parse."""
    Chem = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


@_quiet
def encode_molecule(smiles: str, atoms: Sequence[str], max_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Kekulized encoding: (atom indices [max_atoms] with -1 padding, bond orders [max_atoms, max_atoms]).

    Raises MoleculeError naming the reason (invalid SMILES, atom outside the vocabulary, too many atoms).
    """
    Chem = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise MoleculeError(f"invalid SMILES {smiles!r}", "invalid")
    mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol, isomericSmiles=False))
    Chem.Kekulize(mol, clearAromaticFlags=True)
    n = mol.GetNumAtoms()
    if n == 0:
        raise MoleculeError(f"empty molecule {smiles!r}", "empty")
    if n > max_atoms:
        raise MoleculeError(f"{smiles!r} has {n} heavy atoms, more than max_atoms={max_atoms}", "too_many_atoms")
    index = {a: i for i, a in enumerate(atoms)}
    types = np.full(max_atoms, -1, dtype=np.int64)
    for a in mol.GetAtoms():
        sym = a.GetSymbol()
        if sym not in index:
            raise MoleculeError(f"{smiles!r} has atom {sym!r} outside the vocabulary {list(atoms)}", "atom", sym)
        types[a.GetIdx()] = index[sym]
    adj = np.zeros((max_atoms, max_atoms), dtype=np.int64)
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
    for b in mol.GetBonds():
        bt = b.GetBondType()
        if bt not in orders:
            raise MoleculeError(f"{smiles!r} has a {bt} bond after kekulization", "bond")
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        adj[i, j] = adj[j, i] = orders[bt]
    return types, adj


@dataclass
class Decoded:
    """A generated molecule: the corrected RDKit Mol (or None) and whether it was valid before correction."""

    mol: object | None
    valid_without_correction: bool


def _valence_error_atom(mol) -> tuple[int, int] | None:
    """(atom index, its explicit valence) of the first atom whose valence is too high, or None."""
    Chem = _rdkit()
    try:
        Chem.SanitizeMol(mol, sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES)
        return None
    except Exception as e:  # noqa: BLE001 - RDKit raises AtomValenceException and friends
        msg = str(e)
        m = re.search(r"atom # ?(\d+)", msg, flags=re.I)
        v = re.search(r"atom # ?\d+ \w+, (\d+), is greater|valence of (\d+)", msg)
        if m is None:
            return (-1, -1)
        idx = int(m.group(1))
        if v is not None:
            val = int(next(g for g in v.groups() if g is not None))
        else:
            val = int(sum(b.GetBondTypeAsDouble() for b in mol.GetAtomWithIdx(idx).GetBonds()))
        return idx, val


@_quiet
def decode_molecule(types: np.ndarray, adj: np.ndarray, atoms: Sequence[str]) -> Decoded:
    """Build a molecule from atom types (-1 = no atom) and bond orders, with GDSS's rules.

    While bonds are added, an N / O / S whose valence exceeds its normal valence by exactly one
    gets a +1 formal charge (so [N+], [O+], [S+] count as valid without correction). Validity
    without correction is checked before :func:`correct_valency`; the returned molecule is the
    corrected one restricted to its largest fragment (None when nothing valid remains).
    """
    Chem = _rdkit()
    mol = Chem.RWMol()
    keep = [i for i, t in enumerate(types) if t >= 0]
    pos = {}
    for i in keep:
        pos[i] = mol.AddAtom(Chem.Atom(atoms[int(types[i])]))
    bt = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for a in range(len(keep)):
        for b in range(a + 1, len(keep)):
            i, j = keep[a], keep[b]
            order = int(adj[i, j])
            if order not in bt:
                continue
            mol.AddBond(pos[i], pos[j], bt[order])
            err = _valence_error_atom(mol)
            if err is not None and err[0] >= 0:
                idx, val = err
                atom = mol.GetAtomWithIdx(idx)
                sym = atom.GetSymbol()
                if sym in ("N", "O", "S") and val - ATOM_VALENCY[sym] == 1:
                    atom.SetFormalCharge(1)
    if mol.GetNumAtoms() == 0:
        return Decoded(None, False)
    valid = _valence_error_atom(mol) is None  # GDSS's check_valency: valences within limits
    fixed = correct_valency(mol)
    return Decoded(largest_fragment(fixed) if fixed is not None else None, valid)


def _sanitizes(mol) -> bool:
    Chem = _rdkit()
    try:
        m = Chem.Mol(mol)
        Chem.SanitizeMol(m)
        return Chem.MolFromSmiles(Chem.MolToSmiles(m)) is not None
    except Exception:  # noqa: BLE001
        return False


@_quiet
def correct_valency(mol, max_iter: int = 100):
    """GDSS's valency correction: while an atom's valence is too high, lower its highest-order
    bond by one (removing it at zero). Returns a sanitizable molecule or None."""
    Chem = _rdkit()
    mol = Chem.RWMol(mol)
    for _ in range(max_iter):
        err = _valence_error_atom(mol)
        if err is None:
            break
        idx = err[0]
        if idx < 0:
            return None
        bonds = sorted(mol.GetAtomWithIdx(idx).GetBonds(), key=lambda b: b.GetBondTypeAsDouble(), reverse=True)
        if not bonds:
            return None
        b = bonds[0]
        i, j, order = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())
        mol.RemoveBond(i, j)
        if order > 1:
            mol.AddBond(i, j, {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE}[order - 1])
    return mol if _sanitizes(mol) else None


@_quiet
def largest_fragment(mol):
    """The largest fragment, chosen as GDSS does: by the length of its SMILES string."""
    Chem = _rdkit()
    m = Chem.Mol(mol)
    Chem.SanitizeMol(m)
    smiles = Chem.MolToSmiles(m, isomericSmiles=True)
    if "." in smiles:
        smiles = max(smiles.split("."), key=len)
    return Chem.MolFromSmiles(smiles)


def write_smiles(mols: Iterable, path: str | os.PathLike) -> Path:
    """One canonical SMILES per line (empty line for a None molecule), written atomically."""
    from workbench.data import atomic_write

    Chem = _rdkit()
    with atomic_write(path) as f:
        for m in mols:
            f.write((Chem.MolToSmiles(m) if m is not None else "") + "\n")
    return Path(path)


def write_sdf(mols: Iterable, path: str | os.PathLike) -> Path:
    """An SDF file of the (non-None) molecules, written atomically."""
    from workbench.data import atomic_write

    Chem = _rdkit()
    with atomic_write(path) as f:
        w = Chem.SDWriter(f)
        for m in mols:
            if m is not None:
                w.write(m)
        w.close()
    return Path(path)

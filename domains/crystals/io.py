"""Native formats of the crystals domain: CIF text and the CDVAE CSV (``material_id``, ``cif``, properties).

Conventions
-----------
* :func:`structure_from_cif` parses one CIF string with pymatgen after checking the raw file: cell
  lengths > 0, angles in (0, 180) and a positive cell volume, real elements with Z <= 100
  (:data:`MAX_ATOMIC_NUM`, as CDVAE), no two atoms on one site (periodic distance <
  :data:`MIN_DISTANCE` = 0.01 A). Every problem is a one-line :class:`~workbench.errors.DataError`.
* :func:`structure_arrays` is CDVAE's ``build_crystal``: Niggli reduction, then the lattice is rebuilt
  from its lengths and angles (``Lattice.from_parameters``: a canonical orientation, rows are the
  lattice vectors) with the same fractional coordinates, wrapped into [0, 1). One difference: a
  Niggli cell with a negative determinant (left-handed) is first replaced by ``-L`` with ``-f``
  (the same atoms), because rebuilding it from its parameters would give its mirror image.
* :func:`read_cdvae_csv` reads a CDVAE CSV with pandas. Rows are numbered from 0 over the data
  records (header excluded, as pandas does); a bad row is reported as
  ``<file>: row K (material_id X): <problem>``.
* Writers (:func:`write_cif`, :func:`write_cdvae_csv`) write atomically and refuse to overwrite.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from workbench.data import atomic_write
from workbench.errors import DataError, first_rows, warn_input

__all__ = ["MAX_ATOMIC_NUM", "MIN_DISTANCE", "CrystalError", "CrystalFormatError", "DataFileNotFound", "OutputExists",
           "BadRow", "CrystalTable", "structure_from_cif", "structure_arrays", "arrays_to_structure",
           "wrap01", "read_cdvae_csv", "report_bad_rows", "write_cif", "write_cdvae_csv"]

#: largest atomic number accepted (CDVAE's MAX_ATOMIC_NUM)
MAX_ATOMIC_NUM = 100
#: two atoms closer than this (A, periodic) are "on one site"
MIN_DISTANCE = 0.01


class CrystalError(ValueError):
    """One crystal's problem (no file / row in the message); wrapped into a :class:`DataError` by the callers."""


class CrystalFormatError(DataError):
    """A CIF or CDVAE CSV that cannot be used; the message names the file, the row and the problem."""


class DataFileNotFound(DataError, FileNotFoundError):
    """A data file that does not exist; the message names it and how to get it."""


class OutputExists(DataError, FileExistsError):
    """An output file that already exists (outputs never overwrite)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _pmg():
    try:
        import pymatgen.core  # noqa: F401
    except ImportError as e:  # pragma: no cover - the crystals extra is missing
        raise ModuleNotFoundError("the crystals domain needs the optional package 'pymatgen', which is not "
                                  "installed: pip install 'workbench[crystals]'", name="pymatgen") from e
    from pymatgen.core import Lattice, Structure
    return Lattice, Structure


_NUM = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\(\d+\))?\s*$")
_SYMBOL = re.compile(r"^([A-Z][a-z]?)")


def _cif_number(v: Any, key: str) -> float:
    m = _NUM.match(str(v))
    if not m:
        raise CrystalError(f"the CIF does not parse: {key} = {v!r} is not a number")
    return float(m.group(1))


def _element_z(symbol: str, label: str, k: int) -> int:
    from pymatgen.core.periodic_table import Element

    m = _SYMBOL.match(symbol.strip())
    name = m.group(1) if m else symbol.strip()
    try:
        z = int(Element(name).Z)
    except (ValueError, KeyError):
        raise CrystalError(f"unknown element {symbol.strip()!r} at site {k} ({label})") from None
    if z > MAX_ATOMIC_NUM:
        raise CrystalError(f"element {name} (Z = {z}) at site {k} ({label}) is beyond Z = {MAX_ATOMIC_NUM} "
                           "(MAX_ATOMIC_NUM, as CDVAE)")
    return z


def _cell_checks(lengths: Sequence[float], angles: Sequence[float]) -> None:
    for name, v in zip("abc", lengths):
        if not math.isfinite(v) or v <= 0:
            raise CrystalError(f"non-positive cell length {name} = {v:g} A")
    for name, v in zip(("alpha", "beta", "gamma"), angles):
        if not math.isfinite(v) or not 0 < v < 180:
            raise CrystalError(f"cell angle {name} = {v:g} deg is outside (0, 180): non-positive cell volume")
    ca, cb, cg = (math.cos(math.radians(x)) for x in angles)
    f = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
    if f <= 1e-12:
        raise CrystalError(f"non-positive cell volume (angles {angles[0]:g}, {angles[1]:g}, {angles[2]:g} deg "
                           "do not make a cell)")


def _coincident(frac: np.ndarray, matrix: np.ndarray) -> tuple[int, int, float] | None:
    """The first pair of sites closer than MIN_DISTANCE (periodic: the nearest-integer difference)."""
    n = len(frac)
    if n < 2:
        return None
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ matrix, axis=-1)
    dist[np.arange(n), np.arange(n)] = np.inf
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    if dist[i, j] < MIN_DISTANCE:
        i, j = sorted((int(i), int(j)))
        return i, j, float(dist[i, j])
    return None


def _raw_checks(text: str) -> None:
    """Check the CIF's own numbers before pymatgen builds (or silently fixes) the structure."""
    from pymatgen.io.cif import CifFile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # its "possible issue at line" warnings: the checks below say more
            blocks = list(CifFile.from_str(text).data.values())
    except Exception as e:  # noqa: BLE001 - any tokenizer failure is a file that does not parse
        raise CrystalError(f"the CIF does not parse ({_one_line(e)})") from None
    blocks = [b for b in blocks if "_cell_length_a" in b.data or "_atom_site_fract_x" in b.data]
    if not blocks:
        raise CrystalError("the CIF does not parse (no data block with a cell and atom sites)")
    if len(blocks) > 1:
        raise CrystalError(f"the CIF has {len(blocks)} structures (data blocks); one per record is expected")
    data = blocks[0].data
    keys = ["_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
            "_cell_angle_gamma"]
    missing = [k for k in keys + ["_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"] if k not in data]
    if missing:
        raise CrystalError(f"the CIF does not parse (missing {', '.join(missing)})")
    lengths = [_cif_number(data[k], k) for k in keys[:3]]
    angles = [_cif_number(data[k], k) for k in keys[3:]]
    _cell_checks(lengths, angles)
    xyz = [data[f"_atom_site_fract_{c}"] for c in "xyz"]
    xyz = [[v] if isinstance(v, str) else list(v) for v in xyz]
    n = len(xyz[0])
    labels = data.get("_atom_site_label", [f"site{k}" for k in range(n)])
    symbols = data.get("_atom_site_type_symbol", labels)
    labels = [labels] if isinstance(labels, str) else list(labels)
    symbols = [symbols] if isinstance(symbols, str) else list(symbols)
    if not (len(xyz[1]) == len(xyz[2]) == n == len(symbols)):
        raise CrystalError("the CIF does not parse (atom-site columns of different lengths)")
    for k, s in enumerate(symbols):
        _element_z(s, labels[k] if k < len(labels) else f"site{k}", k)
    frac = np.array([[_cif_number(xyz[c][k], f"_atom_site_fract_{'xyz'[c]}") for c in range(3)] for k in range(n)])
    Lattice, _ = _pmg()
    pair = _coincident(frac, Lattice.from_parameters(*lengths, *angles).matrix)
    if pair is not None:
        i, j, dist = pair
        raise CrystalError(f"two atoms on one site: sites {i} ({labels[i]}) and {j} ({labels[j]}) are {dist:.3g} A "
                           f"apart (< {MIN_DISTANCE} A)")


def _structure_checks(s: Any) -> None:
    from pymatgen.core.periodic_table import Element

    if len(s) == 0:
        raise CrystalError("the CIF has no atoms")
    if not s.is_ordered:
        k = next(i for i, site in enumerate(s) if not site.is_ordered)
        raise CrystalError(f"site {k} is disordered or partially occupied ({s[k].species}); one element per site "
                           "is needed")
    for k, site in enumerate(s):
        el = site.specie
        if not isinstance(el, Element):
            el = getattr(el, "element", None)
        if el is None or not isinstance(el, Element):
            raise CrystalError(f"unknown element {str(site.specie)!r} at site {k}")
        if el.Z > MAX_ATOMIC_NUM:
            raise CrystalError(f"element {el.symbol} (Z = {el.Z}) at site {k} is beyond Z = {MAX_ATOMIC_NUM}")
    if not np.isfinite(s.frac_coords).all():
        raise CrystalError("non-finite fractional coordinates")
    if not (np.linalg.det(s.lattice.matrix) > 0 or np.linalg.det(s.lattice.matrix) < 0) or s.lattice.volume <= 0:
        raise CrystalError("non-positive cell volume")
    if len(s) > 1:
        dm = s.distance_matrix.copy()
        np.fill_diagonal(dm, np.inf)
        i, j = np.unravel_index(np.argmin(dm), dm.shape)
        if dm[i, j] < MIN_DISTANCE:
            i, j = sorted((int(i), int(j)))
            raise CrystalError(f"two atoms on one site: sites {i} ({s[i].specie}) and {j} ({s[j].specie}) are "
                               f"{dm[i, j]:.3g} A apart (< {MIN_DISTANCE} A)")


def _parse_cif(text: str) -> Any:
    """CIF text -> Structure, or :class:`CrystalError` with the problem."""
    _, Structure = _pmg()
    if not isinstance(text, str) or not text.strip():
        raise CrystalError("the CIF is empty")
    _raw_checks(text)
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser(StringIO(text)).parse_structures(primitive=False, on_error="raise")
        except Exception as e:  # noqa: BLE001 - pymatgen raises many kinds for a bad CIF
            said = "; ".join(dict.fromkeys(str(w.message).splitlines()[0][:120] for w in caught))
            raise CrystalError(f"the CIF does not parse ({_one_line(e)}{'; ' + said if said else ''})") from None
    if len(structures) != 1:
        raise CrystalError(f"the CIF does not parse into one structure (got {len(structures)})")
    s = structures[0]
    _structure_checks(s)
    return s


def structure_from_cif(text: str, where: str | None = None, file: Any = None) -> Any:
    """Parse one CIF string into a pymatgen ``Structure`` (checked; see the module docstring).

    Raises :class:`CrystalFormatError` naming ``file`` and ``where`` (e.g. ``"row 3"``) and the problem.
    """
    try:
        return _parse_cif(text)
    except CrystalError as e:
        raise CrystalFormatError(str(e), file=file, where=where) from None


def structure_arrays(structure: Any, niggli: bool = True) -> dict[str, np.ndarray]:
    """CDVAE's canonical arrays of a structure.

    Returns ``frac`` [N, 3] float64 in [0, 1), ``atomic_numbers`` [N] int64, ``lattice`` [3, 3] float64
    (rows are the lattice vectors, ``Lattice.from_parameters`` of the (Niggli-reduced) cell),
    ``lengths`` [3] (A) and ``angles`` [3] (degrees). Raises :class:`CrystalError` if the reduction fails.
    """
    Lattice, _ = _pmg()
    s = structure
    if niggli:
        try:
            s = structure.get_reduced_structure(reduction_algo="niggli")
        except Exception as e:  # noqa: BLE001
            raise CrystalError(f"Niggli reduction failed ({_one_line(e)})") from None
    matrix = np.asarray(s.lattice.matrix, dtype=np.float64)
    frac = np.asarray(s.frac_coords, dtype=np.float64)
    if np.linalg.det(matrix) < 0:  # left-handed: -L with -f are the same atoms, and right-handed
        matrix, frac = -matrix, -frac
    lat = Lattice(matrix)
    lengths = np.asarray(lat.abc, dtype=np.float64)
    angles = np.asarray(lat.angles, dtype=np.float64)
    canon = np.asarray(Lattice.from_parameters(*lengths, *angles).matrix, dtype=np.float64)
    return {"frac": wrap01(frac), "atomic_numbers": np.asarray(s.atomic_numbers, dtype=np.int64),
            "lattice": canon, "lengths": lengths, "angles": angles}


def wrap01(frac: np.ndarray) -> np.ndarray:
    """Wrap into [0, 1): ``x - floor(x)``, with the values that round to 1.0 set to 0."""
    f = frac - np.floor(frac)
    f[f >= 1.0] = 0.0
    return f


def arrays_to_structure(frac: Any, atomic_numbers: Any, lattice: Any) -> Any:
    """A pymatgen Structure from ``frac [N, 3]``, ``atomic_numbers [N]`` and ``lattice [3, 3]`` (rows)."""
    Lattice, Structure = _pmg()
    return Structure(Lattice(np.asarray(lattice, dtype=np.float64)), [int(z) for z in atomic_numbers],
                     np.asarray(frac, dtype=np.float64), coords_are_cartesian=False)


# -- the CDVAE CSV --------------------------------------------------------------------------------
@dataclass
class BadRow:
    row: int
    material_id: str
    problem: str


@dataclass
class CrystalTable:
    """The crystals of a CDVAE CSV: one record per good row, and the bad rows."""

    file: str
    n_rows: int
    records: list[dict[str, Any]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)


def _where(row: int, mid: str) -> str:
    return f"row {row} (material_id {mid})"


def report_bad_rows(file: Any, bad: Sequence[BadRow], n_rows: int, kept: int, listing: Path | None = None) -> None:
    """All rows bad -> :class:`CrystalFormatError`; some -> one :class:`~workbench.errors.InputWarning`
    with the count, the first rows and problems, and the file listing all of them (``listing``)."""
    if not bad:
        return
    head = "; ".join(f"{_where(b.row, b.material_id)}: {b.problem}" for b in bad[:3])
    if kept == 0:
        raise CrystalFormatError(f"all {n_rows} rows are bad, nothing to use: {head}"
                                 + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""), file=file)
    where = "the full list was not written to a file (no listing path given)"
    if listing is not None:
        try:
            import csv
            with atomic_write(listing, newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", "material_id", "problem"])
                for b in bad:
                    w.writerow([b.row, b.material_id, b.problem])
            where = f"the full list is in {listing}"
        except OSError as e:
            where = f"the full list could not be written to {listing} ({e})"
    warn_input(f"{file}: skipped {len(bad)} of {n_rows} rows (rows {first_rows([b.row for b in bad])}): {head}"
               f"{' ...' if len(bad) > 3 else ''}; {where}", stacklevel=3)


def read_cdvae_csv(path: str | Path, *, niggli: bool = True, on_error: str = "raise", max_rows: int | None = None,
                   listing: Path | None = None) -> CrystalTable:
    """Read a CDVAE CSV (``material_id``, ``cif`` and property columns; an unnamed first index column).

    Each record holds ``row``, ``material_id`` (str), the arrays of :func:`structure_arrays` and
    ``properties`` (the numeric columns, NaN when missing). ``on_error="raise"``: the first bad row
    is a :class:`CrystalFormatError` ``<file>: row K (material_id X): <problem>``; ``"skip"``: bad
    rows are left out and reported once (:func:`report_bad_rows`, full list in ``listing``).
    ``max_rows``: read only the first rows. All rows bad is an error either way.
    """
    import pandas as pd

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if not path.exists():
        raise DataFileNotFound("file not found", file=path)
    try:
        df = pd.read_csv(path, nrows=max_rows, dtype={"material_id": str, "cif": str})
    except Exception as e:  # noqa: BLE001 - pandas' many parser errors
        raise CrystalFormatError(f"not a readable CSV ({_one_line(e)})", file=path) from None
    if "cif" not in df.columns:
        raise CrystalFormatError(f"no 'cif' column (columns: {', '.join(map(str, df.columns))}); a CDVAE CSV has "
                                 "material_id, cif and property columns", file=path)
    props = [c for c in df.columns if c not in ("cif", "material_id") and not str(c).startswith("Unnamed")
             and pd.api.types.is_numeric_dtype(pd.to_numeric(df[c], errors="coerce")) and
             pd.to_numeric(df[c], errors="coerce").notna().any()]
    table = CrystalTable(file=str(path), n_rows=len(df), properties=props)
    if len(df) == 0:
        raise CrystalFormatError("no rows", file=path)
    if "material_id" in df.columns:
        mids = df["material_id"].astype(str).tolist()
    else:
        mids = [f"row{k}" for k in range(len(df))]
    values = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) for c in props}
    for k, text in enumerate(df["cif"].tolist()):
        try:
            arrays = structure_arrays(_parse_cif(text), niggli=niggli)
        except CrystalError as e:
            if on_error == "raise":
                raise CrystalFormatError(str(e), file=path, where=_where(k, mids[k])) from None
            table.bad.append(BadRow(k, mids[k], str(e)))
            continue
        arrays.update(row=k, material_id=mids[k], properties={c: float(values[c][k]) for c in props})
        table.records.append(arrays)
    if on_error == "skip" or not table.records:
        report_bad_rows(path, table.bad, table.n_rows, len(table.records), listing)
    return table


# -- writers ------------------------------------------------------------------------------------------
def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise OutputExists("exists; outputs are never overwritten (choose another folder or remove it)", file=path)


def write_cif(structure: Any, path: str | Path) -> Path:
    """Write one structure as a P1 CIF (pymatgen's CifWriter), atomically; refuses an existing file."""
    from pymatgen.io.cif import CifWriter

    path = Path(path)
    _refuse_existing(path)
    text = str(CifWriter(structure))
    with atomic_write(path) as f:
        f.write(text)
    return path


def write_cdvae_csv(structures: Iterable[Any], path: str | Path, material_ids: Sequence[str] | None = None,
                    properties: dict[str, Sequence[float]] | None = None) -> Path:
    """Write structures as a CDVAE CSV (unnamed index, ``material_id``, ``cif``, ``formula``, properties),
    atomically; refuses an existing file. :func:`read_cdvae_csv` reads it back."""
    import pandas as pd
    from pymatgen.io.cif import CifWriter

    path = Path(path)
    _refuse_existing(path)
    structures = list(structures)
    ids = [str(m) for m in material_ids] if material_ids is not None else [f"sample{k}" for k in range(len(structures))]
    if len(ids) != len(structures):
        raise ValueError(f"write_cdvae_csv: {len(structures)} structures but {len(ids)} material ids")
    df = pd.DataFrame({"material_id": ids, "cif": [str(CifWriter(s)) for s in structures],
                       "formula": [s.composition.reduced_formula for s in structures]})
    for k, v in (properties or {}).items():
        df[k] = list(v)
    with atomic_write(path, newline="") as f:
        df.to_csv(f)
    return path

"""The datamodule of the crystals domain: CDVAE's Perov-5 / Carbon-24 / MP-20 CSVs, a CSV of one's
own, or procedurally generated perovskites (:mod:`.prototypes`), as padded batches.

Batch (padding to the largest crystal of the batch; ``B`` crystals, ``N`` atoms at most)::

    {"x": {"frac": float32 [B, N, 3] in [0, 1),
           "lattice": float32 [B, 9] = (L.flatten() - lattice_mean) / lattice_std,   # L rows = vectors
           "types": int64 [B, N] = Z - 1 (0 where padded)},                         # task "gen" only
     "mask": {"frac": float32 [B, N], "types": float32 [B, N]},   # 1 = the atom exists; "types" for "gen"
     "cond": {"types": int64 [B, N]},                             # task "csp" only: the given types
     "num_atoms": int64 [B]}

``lattice_mean`` is 0 (CrysBFN's convention: centring per entry would break the O(3) invariance of
the standardised lattice) and ``lattice_std`` one pooled scalar, the RMS of the training lattices'
entries, repeated 9 times. Both are attributes and part of the
datamodule's ``state_dict`` (a checkpoint restores them).

Parsed files are cached (``torch.save`` of plain tensors and a JSON-able header, loaded with
``weights_only=True``) under ``workbench.data.cache_dir()/crystals`` (or ``cache_dir``), keyed by the
file's sha256 and the options.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workbench.data import DomainDataModule, EpochSeededSampler, cache_dir as default_cache_dir, data_root
from workbench.data import download as _download, load_tensors, save_tensors, sha256sum, write_json
from workbench.errors import ConfigError, DataError, UnsafeOrCorruptFile, check_int, warn_input

from .io import (MAX_ATOMIC_NUM, MIN_DISTANCE, BadRow, CrystalFormatError, DataFileNotFound, OutputExists,
                 arrays_to_structure, read_cdvae_csv, report_bad_rows, structure_arrays, wrap01, write_cdvae_csv,
                 write_cif)

__all__ = ["DATASETS", "SHA256", "BASE_URL", "download", "CrystalSet", "collate_crystals", "CrystalDataModule",
           "load_crystals"]

#: the CDVAE data sets: target property, largest crystal
DATASETS = {"perov_5": {"prop": "heat_ref", "max_atoms": 5}, "carbon_24": {"prop": "energy_per_atom", "max_atoms": 24},
            "mp_20": {"prop": "formation_energy_per_atom", "max_atoms": 20}}
#: sha256 of the files copied from txie-93/cdvae@f857f59 (shared/data/crystals/SOURCES.md); others unknown
SHA256 = {
    "perov_5/val.csv": "326f401219901270374b71e2faff63df3a29a99fd26f469993b9f476b693daf2",
    "perov_5/test.csv": "a85878c685037f0a578257f6d4fcdde00e968dbab73c5f1e90ecef65218513f6",
    "carbon_24/val.csv": "36c00689cd63073c954a58bc6ed6e2adb7aeed5a630c994970959a1babffd50e",
    "carbon_24/test.csv": "386b17c08816f434818d51e46687bf72ff3f92348f3ba24823e4758f1fe8a969",
}
BASE_URL = "https://raw.githubusercontent.com/txie-93/cdvae/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data"
_CACHE_VERSION = 1
_SPLITS = ("train", "val", "test")


def download(dataset: str, dest: str | Path | None = None, *, splits: Sequence[str] = _SPLITS,
             base_url: str = BASE_URL) -> list[Path]:
    """Fetch ``<dataset>/<split>.csv`` from CDVAE's repository into ``dest`` (default
    ``$WORKBENCH_DATA/crystals``), atomically; files with a recorded sha256 (:data:`SHA256`) are
    verified (a mismatch removes the file and is a :class:`DataError`); others are fetched unverified
    with a warning. ``base_url`` may be ``file://...`` (how it is tested)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown crystal dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    dest = Path(dest) if dest is not None else data_root() / "crystals"
    out = []
    for split in splits:
        rel = f"{dataset}/{split}.csv"
        sha = SHA256.get(rel)
        if sha is None:
            warn_input(f"{rel}: no sha256 recorded for this file, it is downloaded unverified")
        try:
            out.append(_download(f"{base_url.rstrip('/')}/{rel}", dest / rel, sha256=sha, progress=False))
        except ValueError as e:
            raise DataError(str(e), file=dest / rel) from None
    return out


# -- items and batches ---------------------------------------------------------------------------------
class CrystalSet(Dataset):
    """Crystals as items ``{"frac" [n, 3], "lattice" [9] standardised, "types" [n] (Z - 1)}``.

    ``scaler`` is the datamodule's ``{"mean": [9], "std": [9]}`` (shared, so restoring it from a
    checkpoint updates every set); ``ids`` the material ids, ``rows`` the source rows.
    """

    def __init__(self, frac: list[np.ndarray], numbers: list[np.ndarray], lattice: np.ndarray,
                 ids: list[str], scaler: dict[str, torch.Tensor], rows: list[int] | None = None,
                 properties: dict[str, np.ndarray] | None = None) -> None:
        self.frac = [torch.as_tensor(f, dtype=torch.float64) for f in frac]
        self.numbers = [torch.as_tensor(z, dtype=torch.int64) for z in numbers]
        self.lattice = torch.as_tensor(np.asarray(lattice), dtype=torch.float64).reshape(-1, 9)
        self.ids, self.scaler = list(ids), scaler
        self.rows = list(rows) if rows is not None else list(range(len(ids)))
        self.properties = properties or {}
        self.num_atoms = torch.tensor([len(z) for z in self.numbers], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, i: int) -> dict[str, Any]:
        lat = (self.lattice[i] - self.scaler["mean"]) / self.scaler["std"]
        return {"frac": self.frac[i], "lattice": lat.float(), "types": self.numbers[i] - 1}

    def structure(self, i: int) -> Any:
        return arrays_to_structure(self.frac[i].numpy(), self.numbers[i].numpy(), self.lattice[i].reshape(3, 3).numpy())

    def formula(self, i: int) -> str:
        from pymatgen.core import Composition, Element

        z, c = torch.unique(self.numbers[i], return_counts=True)
        return Composition({Element.from_Z(int(a)): int(k) for a, k in zip(z, c)}).reduced_formula


def _f32_frac(frac: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1): values just below 1 round to 1.0 in float32 and are wrapped to 0."""
    f = frac.float()
    return torch.where(f >= 1.0, torch.zeros_like(f), f)


class CrystalReference(list):
    """The test Structures, with ``to_structures(samples, template=None, meta=None)`` of the datamodule
    that made them and the ``source`` they came from."""

    def __init__(self, structures: Sequence[Any], to_structures: Any, source: str) -> None:
        super().__init__(structures)
        self.to_structures, self.source = to_structures, source


def collate_crystals(items: Sequence[dict[str, Any]], task: str = "gen", pad_to: int | None = None) -> dict[str, Any]:
    """Pad a list of items to the largest crystal, or to ``pad_to`` atoms (the batch format of the
    module docstring; sampling templates pad to the data set's largest crystal, so that batches of
    samples concatenate)."""
    B = len(items)
    n = torch.tensor([len(it["types"]) for it in items], dtype=torch.int64)
    N = int(n.max()) if B else 0
    if pad_to is not None:
        if N > int(pad_to):
            raise ValueError(f"collate_crystals: a crystal has {N} atoms, more than pad_to={pad_to}")
        N = int(pad_to)
    frac = torch.zeros(B, N, 3)
    types = torch.zeros(B, N, dtype=torch.int64)
    mask = torch.zeros(B, N)
    for b, it in enumerate(items):
        k = int(n[b])
        frac[b, :k] = _f32_frac(it["frac"])
        types[b, :k] = it["types"]
        mask[b, :k] = 1.0
    lattice = torch.stack([it["lattice"] for it in items]).float() if B else torch.zeros(0, 9)
    if task == "csp":
        return {"x": {"frac": frac, "lattice": lattice}, "mask": {"frac": mask}, "cond": {"types": types},
                "num_atoms": n}
    return {"x": {"frac": frac, "lattice": lattice, "types": types}, "mask": {"frac": mask, "types": mask.clone()},
            "num_atoms": n}


class _Collate:
    def __init__(self, task: str) -> None:
        self.task = task

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_crystals(items, self.task)


# -- parsing with a cache ----------------------------------------------------------------------------------
def _cache_key(path: Path, niggli: bool, max_rows: int | None) -> tuple[str, str]:
    sha = sha256sum(path)
    key = json.dumps({"sha256": sha, "niggli": bool(niggli), "max_rows": max_rows, "max_z": MAX_ATOMIC_NUM,
                      "min_distance": MIN_DISTANCE, "version": _CACHE_VERSION}, sort_keys=True)
    return key, hashlib.sha256(key.encode()).hexdigest()[:16]


def _pack(table: Any, key: str) -> dict[str, Any]:
    recs = table.records
    num = [len(r["atomic_numbers"]) for r in recs]
    return {
        "frac": torch.as_tensor(np.concatenate([r["frac"] for r in recs]) if recs else np.zeros((0, 3))),
        "atomic_numbers": torch.as_tensor(np.concatenate([r["atomic_numbers"] for r in recs]) if recs
                                          else np.zeros(0, np.int64)),
        "num_atoms": torch.tensor(num, dtype=torch.int64),
        "lattice": torch.as_tensor(np.stack([r["lattice"] for r in recs]) if recs else np.zeros((0, 3, 3))),
        "lengths": torch.as_tensor(np.stack([r["lengths"] for r in recs]) if recs else np.zeros((0, 3))),
        "angles": torch.as_tensor(np.stack([r["angles"] for r in recs]) if recs else np.zeros((0, 3))),
        "row": torch.tensor([r["row"] for r in recs], dtype=torch.int64),
        "properties": {p: torch.tensor([r["properties"][p] for r in recs], dtype=torch.float64)
                       for p in table.properties},
        "header": {"key": key, "file": table.file, "n_rows": table.n_rows,
                   "material_id": [r["material_id"] for r in recs],
                   "bad": [[b.row, b.material_id, b.problem] for b in table.bad]},
    }


_PACKED = ("frac", "atomic_numbers", "num_atoms", "lattice", "lengths", "angles", "row", "properties", "header")


def load_crystals(path: str | Path, *, niggli: bool = True, on_error: str = "raise", max_rows: int | None = None,
                  cache: bool = True, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Parse a CDVAE CSV (:func:`.io.read_cdvae_csv`) into packed tensors, cached per (sha256, options).

    Returns the dict of :func:`_pack`: ``frac [sum n, 3]``, ``atomic_numbers [sum n]``, ``num_atoms [n]``,
    ``lattice [n, 3, 3]``, ``lengths``, ``angles``, ``row``, ``properties {name: [n]}`` and a
    ``header`` (material ids, bad rows). A cache hit re-reports the bad rows as a fresh parse would
    (an error under ``on_error="raise"``, else a warning). A corrupt cache is re-parsed with a warning.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileNotFound("file not found", file=path)
    key, digest = _cache_key(path, niggli, max_rows)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "crystals"
    file = folder / f"{path.parent.name}-{path.stem}-{digest}.pt"
    listing = file.with_suffix(".bad_rows.csv")
    if cache and file.exists():
        try:
            packed = load_tensors(file, what="crystal cache")
            if (not isinstance(packed, dict) or any(k not in packed for k in _PACKED)
                    or packed["header"].get("key") != key):
                raise UnsafeOrCorruptFile(f"cannot load crystal cache {file}: not this file's cache")
        except UnsafeOrCorruptFile as e:
            warn_input(f"{e}; re-parsing {path}")
        else:
            bad = [BadRow(int(r), str(m), str(p)) for r, m, p in packed["header"]["bad"]]
            if bad and on_error == "raise":
                b = bad[0]
                raise CrystalFormatError(b.problem, file=path, where=f"row {b.row} (material_id {b.material_id})")
            report_bad_rows(path, bad, int(packed["header"]["n_rows"]), len(packed["num_atoms"]),
                            listing if listing.exists() else None)
            return packed
    table = read_cdvae_csv(path, niggli=niggli, on_error=on_error, max_rows=max_rows,
                           listing=listing if cache else None)
    packed = _pack(table, key)
    if cache:
        try:
            save_tensors(file, packed)
        except OSError as e:
            warn_input(f"could not write the crystal cache {file} ({e}); parsing again next time")
    return packed


def _unpack(packed: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    n = packed["num_atoms"].tolist()
    frac = list(torch.split(packed["frac"], n)) if n else []
    numbers = list(torch.split(packed["atomic_numbers"], n)) if n else []
    return [f.numpy() for f in frac], [z.numpy() for z in numbers], packed["lattice"].reshape(-1, 9).numpy()


# -- the datamodule ---------------------------------------------------------------------------------------
class CrystalDataModule(DomainDataModule):
    """Crystals for crystal structure prediction (``task="csp"``: types given) or generation (``"gen"``).

    Args:
        source: ``"perov_5"``, ``"carbon_24"``, ``"mp_20"`` (CDVAE CSVs under ``data_dir/<source>/``),
            ``"csv"`` (``path``: a folder with ``<split>.csv`` files, or one CSV which is split 80/20
            by a fixed permutation) or ``"prototypes"`` (the embedded, procedurally generated
            stand-in of :mod:`.prototypes`; no download).
        train_split, test_split: the CSV files trained and tested on. The default ``"val"`` is not
            the paper's split (train.csv is absent from the shipped data); this is printed.
        max_test: the first ``max_test`` test crystals (fixed) are the test set.
        max_rows: read only the first rows of each CSV (quick runs, tests).
        n_prototypes, prototype_seed: size and seed of the generated training set (the test set is
            ``min(max_test, max(1, n_prototypes // 4))`` crystals from another stream of the seed).
        niggli: Niggli-reduce as CDVAE. on_error: ``"raise"`` or ``"skip"`` bad rows.
        cache, cache_dir: cache the parsed files (default folder ``workbench.data.cache_dir()/crystals``).
        data_dir: the folder holding ``<source>/<split>.csv`` (null: ``data_root()/crystals``).
    """

    def __init__(self, source: str = "prototypes", path: str | None = None, train_split: str = "val",
                 test_split: str = "test", max_test: int | None = 500, max_rows: int | None = None,
                 n_prototypes: int = 1000, prototype_seed: int = 0, niggli: bool = True, on_error: str = "raise",
                 task: str = "csp", cache: bool = True, cache_dir: str | None = None, data_dir: str | None = None,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        batch_size = check_int(batch_size, "datamodule.batch_size", minimum=1)
        num_workers = check_int(num_workers, "datamodule.num_workers", minimum=0)
        seed = check_int(seed, "datamodule.seed")
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        sources = (*DATASETS, "csv", "prototypes")
        for key, value, allowed in (("source", source, sources), ("on_error", on_error, ("raise", "skip")),
                                    ("task", task, ("csp", "gen"))):
            if value not in allowed:
                raise ConfigError(f"config key 'datamodule.{key}' must be one of {list(allowed)}, got {value!r}")
        for key, value in (("train_split", train_split), ("test_split", test_split)):
            if not isinstance(value, str) or not value or "/" in value:
                raise ConfigError(f"config key 'datamodule.{key}' must be a split name such as 'val', got {value!r}")
        for key, value in (("niggli", niggli), ("cache", cache)):
            if not isinstance(value, bool):
                raise ConfigError(f"config key 'datamodule.{key}' must be true or false, got {value!r}")
        if source == "csv" and not path:
            raise ConfigError("config key 'datamodule.path' must be set for datamodule.source=csv")
        self.source, self.path, self.task, self.on_error = source, path, task, on_error
        self.train_split, self.test_split = train_split, test_split
        self.max_test = check_int(max_test, "datamodule.max_test", minimum=1, allow_none=True)
        self.max_rows = check_int(max_rows, "datamodule.max_rows", minimum=1, allow_none=True)
        self.n_prototypes = check_int(n_prototypes, "datamodule.n_prototypes", minimum=1)
        self.prototype_seed = check_int(prototype_seed, "datamodule.prototype_seed")
        self.niggli, self.cache = niggli, cache
        self.cache_dir, self.data_dir = cache_dir, data_dir
        self.scaler = {"mean": torch.zeros(9, dtype=torch.float64), "std": torch.ones(9, dtype=torch.float64)}
        self.num_atoms_hist = torch.zeros(1, dtype=torch.int64)
        self._restored: dict[str, Any] | None = None
        self._cursor = 0
        self._ready = False

    # -- files -------------------------------------------------------------------------------------------
    @property
    def lattice_mean(self) -> torch.Tensor:
        return self.scaler["mean"]

    @property
    def lattice_std(self) -> torch.Tensor:
        return self.scaler["std"]

    def file(self, split: str) -> Path:
        """The CSV of a split."""
        if self.source == "csv":
            p = Path(self.path)
            return p / f"{split}.csv" if p.is_dir() else p
        root = Path(self.data_dir) if self.data_dir else data_root() / "crystals"
        return root / self.source / f"{split}.csv"

    def _load(self, split: str) -> dict[str, Any]:
        f = self.file(split)
        if not f.exists():
            if self.source == "csv":
                raise DataFileNotFound("file not found (datamodule.path)", file=f)
            rel = f"{self.source}/{split}.csv"
            how = (f"get it with: python -c \"from workbench.domains.crystals.data import download; "
                   f"download('{self.source}', splits=['{split}'])\" (from github.com/txie-93/cdvae), or set "
                   "datamodule.data_dir / WORKBENCH_DATA to the folder holding it")
            if split == "train":
                how += "; the shipped data has only val.csv and test.csv: datamodule.train_split=val trains on val"
            raise DataFileNotFound(f"{rel} not found; {how}", file=f)
        return load_crystals(f, niggli=self.niggli, on_error=self.on_error, max_rows=self.max_rows, cache=self.cache,
                             cache_dir=self.cache_dir)

    def _set(self, packed: dict[str, Any], idx: np.ndarray | None = None) -> CrystalSet:
        frac, numbers, lattice = _unpack(packed)
        ids = list(packed["header"]["material_id"])
        rows = packed["row"].tolist()
        if idx is None:
            idx = np.arange(len(ids))
        props = {k: v.numpy()[idx] for k, v in packed["properties"].items()}
        return CrystalSet([frac[i] for i in idx], [numbers[i] for i in idx], lattice[idx], [ids[i] for i in idx],
                          self.scaler, [rows[i] for i in idx], props)

    def _prototype_set(self, n: int, stream: int) -> CrystalSet:
        from .prototypes import generate_perovskites

        structures, ids = generate_perovskites(n, self.prototype_seed, stream=stream)
        arrays = [structure_arrays(s, niggli=self.niggli) for s in structures]
        return CrystalSet([a["frac"] for a in arrays], [a["atomic_numbers"] for a in arrays],
                          np.stack([a["lattice"].reshape(9) for a in arrays]), ids, self.scaler)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.source == "prototypes":
            n_test = min(self.max_test or 10 ** 9, max(1, self.n_prototypes // 4))
            train, test = self._prototype_set(self.n_prototypes, 0), self._prototype_set(n_test, 1)
            what = (f"{self.n_prototypes} generated perovskite prototypes (seed {self.prototype_seed}; a procedural "
                    f"stand-in, not a materials data set) / {n_test} test")
        elif self.source == "csv" and not Path(self.path).is_dir():
            packed = self._load("train")
            n = len(packed["num_atoms"])
            if n < 2:
                raise DataError(f"{n} crystal(s): at least 2 are needed (training and test)", file=self.file("train"))
            perm = np.random.default_rng(0).permutation(n)
            k = max(1, n // 5)
            test_idx = np.sort(perm[:k])[: self.max_test or None]
            train, test = self._set(packed, np.sort(perm[k:])), self._set(packed, test_idx)
            what = f"{self.path}: {len(train)} training / {len(test)} test crystals (fixed 80/20 permutation, seed 0)"
        else:
            train = self._set(self._load(self.train_split))
            packed = self._load(self.test_split)
            n = len(packed["num_atoms"])
            test = self._set(packed, np.arange(min(n, self.max_test or n)))
            name = self.source if self.source != "csv" else str(self.path)
            what = (f"{name}: {len(train)} training crystals ({self.train_split}.csv) / the first {len(test)} of "
                    f"{n} test crystals ({self.test_split}.csv)")
            if self.train_split != "train":
                what += (f"; training on the {self.train_split} split, testing on {self.test_split}: not the paper's "
                         "split (CDVAE trains on train.csv)")
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"empty split: {len(train)} training / {len(test)} test crystals", file=self.source)
        self.train_set, self.test_set = train, test
        self.val_set = CrystalSet(test.frac[: 2 * self.batch_size], test.numbers[: 2 * self.batch_size],
                                  test.lattice[: 2 * self.batch_size].numpy(), test.ids[: 2 * self.batch_size],
                                  self.scaler, test.rows[: 2 * self.batch_size])
        self._fit_statistics()
        self._ready = True
        print(f"workbench: crystals ({self.task}): {what}", file=sys.stderr)

    def _fit_statistics(self) -> None:
        # CrysBFN's convention: no centring (lattice_mean 0), one scale for all 9 entries. A per-entry
        # mean would break the O(3) invariance of the standardised lattice (L R^T - m is not (L - m) R^T),
        # on which the network's Gram-matrix features and M @ L head rely.
        lat = self.train_set.lattice
        mean = torch.zeros(9, dtype=torch.float64)
        std = float((lat ** 2).mean().sqrt()) if len(lat) else 0.0
        if not std > 1e-8:
            std = 1.0
        hist = torch.bincount(self.train_set.num_atoms, minlength=int(self.train_set.num_atoms.max()) + 1)
        self.scaler["mean"].copy_(mean)
        self.scaler["std"].fill_(std)
        self.num_atoms_hist = hist
        self.max_atoms = int(max(int(self.train_set.num_atoms.max()), int(self.test_set.num_atoms.max())))
        if self._restored is not None:
            self._apply_restored()

    # -- checkpoint state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"lattice_mean": self.scaler["mean"].tolist(), "lattice_std": self.scaler["std"].tolist(),
                "num_atoms_hist": self.num_atoms_hist.tolist(), "task": self.task, "source": self.source}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = dict(state)
        self._apply_restored()

    def _apply_restored(self) -> None:
        st = self._restored
        self.scaler["mean"].copy_(torch.tensor(st["lattice_mean"], dtype=torch.float64))
        self.scaler["std"].copy_(torch.tensor(st["lattice_std"], dtype=torch.float64))
        self.num_atoms_hist = torch.tensor(st["num_atoms_hist"], dtype=torch.int64)

    # -- loaders -----------------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        sampler = EpochSeededSampler(len(ds), self.seed) if train else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          drop_last=False, persistent_workers=self.num_workers > 0, collate_fn=_Collate(self.task))

    # -- what the core asks -----------------------------------------------------------------------------
    def sample_template(self, n: int, generator: torch.Generator | None = None, start: int | None = None
                        ) -> dict[str, Any]:
        """``n`` zero states with masks, and ``"meta"`` records.

        CSP: the compositions of test crystals ``start, start + 1, ...`` (wrapping; by default
        continuing where the previous call stopped, from 0), types under ``"cond"``; meta records
        ``{index, material_id, formula, num_atoms, atomic_numbers}``. Generation: numbers of atoms
        drawn from :attr:`num_atoms_hist` with ``generator``; meta ``{index, material_id: None,
        formula: None, num_atoms}``.
        """
        self.setup()
        n = int(n)
        if self.task == "csp":
            ts = self.test_set
            first = self._cursor if start is None else int(start)
            idx = [(first + k) % len(ts) for k in range(n)]
            self._cursor = (first + n) % len(ts)
            items = [{"frac": torch.zeros(len(ts.numbers[i]), 3), "lattice": torch.zeros(9),
                      "types": ts.numbers[i] - 1} for i in idx]
            batch = collate_crystals(items, "csp", pad_to=self.max_atoms)
            batch["meta"] = [{"index": i, "material_id": ts.ids[i], "formula": ts.formula(i),
                              "num_atoms": len(ts.numbers[i]), "atomic_numbers": ts.numbers[i].tolist()} for i in idx]
            return batch
        p = self.num_atoms_hist.double()
        counts = torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)
        items = [{"frac": torch.zeros(int(c), 3), "lattice": torch.zeros(9),
                  "types": torch.zeros(int(c), dtype=torch.int64)} for c in counts]
        batch = collate_crystals(items, "gen", pad_to=self.max_atoms)
        batch["meta"] = [{"index": k, "material_id": None, "formula": None, "num_atoms": int(c)}
                         for k, c in enumerate(counts)]
        return batch

    def plot_samples(self, samples: dict[str, torch.Tensor], path: Any,
                     meta: Sequence[dict[str, Any]] | None = None) -> Any:
        """Lattice lengths and densities of the samples against the test crystals, and one sampled cell
        (:func:`.plots.crystal_figure`); ``meta``: the templates' records (the CLI passes them). None
        without them (the samples alone do not say how many atoms each crystal has)."""
        from .plots import crystal_figure

        n = int(samples["frac"].shape[0])
        if meta is None or len(meta) != n:
            return None
        structures = self.to_structures(samples, meta=meta)
        return crystal_figure(structures, self.reference(), path, title=f"{self.source} ({self.task}): {n} samples")

    def reference(self) -> "CrystalReference":
        """The test crystals as pymatgen Structures (canonical lattice, as in the batches): a list that
        also carries :meth:`to_structures`, so a metrics function ``metrics(samples, reference,
        meta=...)`` can turn sampled tensors into Structures (the CLI's ``evaluate`` calls it so)."""
        self.setup()
        return CrystalReference([self.test_set.structure(i) for i in range(len(self.test_set))], self.to_structures,
                                self.source)

    def reference_batch(self) -> dict[str, Any]:
        """The test split as one padded batch (the format of the module docstring)."""
        self.setup()
        return collate_crystals([self.test_set[i] for i in range(len(self.test_set))], self.task)

    def to_structures(self, samples: dict[str, torch.Tensor], template: dict[str, Any] | None = None,
                      meta: Sequence[dict[str, Any]] | None = None) -> list[Any]:
        """Samples ``{"frac", "lattice", ["types"]}`` -> Structures (``None`` for an item whose lattice
        or coordinates are non-finite, whose cell volume is below 0.1 A^3 or whose types are outside
        1..MAX_ATOMIC_NUM; :attr:`last_invalid` counts them). The lattice is de-standardised, the
        coordinates wrapped into [0, 1), ``Z = types + 1``. Atom counts and (CSP) types come from
        ``template`` (``num_atoms`` / masks, ``cond``) or ``meta`` records."""
        frac = samples["frac"].detach().cpu().double()
        lat = samples["lattice"].detach().cpu().double() * self.scaler["std"] + self.scaler["mean"]
        B = frac.shape[0]
        if template is not None and template.get("num_atoms") is not None:
            num = [int(v) for v in template["num_atoms"]]
        elif meta is not None:
            num = [int(m["num_atoms"]) for m in meta]
        else:
            num = [frac.shape[1]] * B
        if "types" in samples:
            types = samples["types"].detach().cpu()
            if types.is_floating_point():
                types = types.round().long()
            zs = [(types[b, : num[b]] + 1).tolist() for b in range(B)]
        elif template is not None and template.get("cond") is not None:
            zs = [(template["cond"]["types"][b, : num[b]] + 1).tolist() for b in range(B)]
        elif meta is not None:
            zs = [list(m["atomic_numbers"]) for m in meta]
        else:
            raise ConfigError("to_structures: the samples have no types; pass the template (cond) or the meta records")
        out: list[Any] = []
        invalid = 0
        for b in range(B):
            L = lat[b].reshape(3, 3).numpy()
            f = frac[b, : num[b]].numpy()
            z = zs[b]
            ok = np.isfinite(L).all() and np.isfinite(f).all() and all(1 <= v <= MAX_ATOMIC_NUM for v in z)
            ok = ok and abs(np.linalg.det(L)) >= 0.1 and len(z) == len(f)
            if not ok:
                out.append(None)
                invalid += 1
                continue
            f = wrap01(f)
            if np.linalg.det(L) < 0:  # same atoms in a right-handed cell (CIF stores only lengths and angles)
                L, f = -L, wrap01(-f)
            out.append(arrays_to_structure(f, z, L))
        self.last_invalid = invalid
        return out

    def save_samples(self, samples: dict[str, torch.Tensor], directory: str | Path,
                     meta: list[Any] | None = None) -> list[Path]:
        """One CIF per structure (``sample_00012.cif``), ``samples.csv`` (CDVAE format: material_id is the
        test crystal's for CSP, ``sample_<k>`` for generation), ``samples.pt`` and ``meta.json``; an item
        that gives no structure (:meth:`to_structures`) is left out with a warning. Never overwrites:
        an existing output is an :class:`~.io.OutputExists` error before anything is written."""
        out = Path(directory)
        structures = self.to_structures(samples, meta=meta)
        names = [out / f"sample_{k:05d}.cif" for k in range(len(structures))]
        targets = [p for p, s in zip(names, structures) if s is not None] + [out / "samples.csv", out / "samples.pt"]
        if meta is not None:
            targets.append(out / "meta.json")
        for p in targets:
            if p.exists():
                raise OutputExists("exists; outputs are never overwritten (choose another folder or remove it)", file=p)
        files: list[Path] = []
        for p, s in zip(names, structures):
            if s is not None:
                files.append(write_cif(s, p))
        good = [k for k, s in enumerate(structures) if s is not None]
        ids = [(meta[k].get("material_id") if meta is not None else None) or f"sample_{k:05d}" for k in good]
        files.append(write_cdvae_csv([structures[k] for k in good], out / "samples.csv", material_ids=ids))
        save_tensors(out / "samples.pt", {k: v.detach().cpu() for k, v in samples.items()})
        files.append(out / "samples.pt")
        if meta is not None:
            from workbench.data import _jsonable

            write_json(out / "meta.json", {"items": [_jsonable(m) for m in meta]})
            files.append(out / "meta.json")
        if self.last_invalid:
            bad = [k for k, s in enumerate(structures) if s is None]
            warn_input(f"{out}: {len(bad)} of {len(structures)} samples give no structure (non-finite or degenerate "
                       f"lattice, or types outside 1..{MAX_ATOMIC_NUM}): items {bad[:5]}"
                       f"{' ...' if len(bad) > 5 else ''}"
                       " have no CIF and no CSV row")
        return files

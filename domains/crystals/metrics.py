"""Metrics of the crystals domain, computed as the CDVAE / DiffCSP evaluation scripts compute them.

Definitions follow ``scripts/compute_metrics.py`` and ``scripts/eval_utils.py`` of txie-93/cdvae
(Xie et al., ICLR 2022) and jiaor17/DiffCSP (Jiao et al., NeurIPS 2023), re-implemented here on
pymatgen, smact, matminer and scipy. Every function takes pymatgen ``Structure`` objects; ``None``
stands for an item that could not be built and counts as invalid / unmatched.

* Structural validity: smallest periodic (PBC) interatomic distance >= 0.5 A and volume >= 0.1 A^3
  (plus finite, positive lattice lengths and finite coordinates, as DiffCSP's ``Crystal`` checks).
* Compositional validity: SMACT charge neutrality + Pauling electronegativity order, single
  elements and all-metal alloys valid (CDVAE ``smact_validity``; DiffCSP's 1e7 limit on the number
  of oxidation-state combinations).
* ``valid`` = structurally valid AND compositionally valid AND the CrystalNN fingerprint could be
  computed (CDVAE marks a crystal invalid when the fingerprint throws).
* Fingerprints: structure = mean over sites of matminer ``CrystalNNFingerprint.from_preset("ops")``
  (61 values); composition = matminer ``ElementProperty.from_preset("magpie")`` (132 values),
  standardised by :class:`CompositionScaler`.
* COV-R / COV-P and AMSD / AMCD: CDVAE ``compute_cov`` (Euclidean distances, thresholds
  :data:`COV_CUTOFFS`). As in CDVAE, the generated side keeps every structure whose fingerprint
  exists (validity is NOT a filter there) and precision is divided by ALL generated structures.
* Property Wasserstein distances: density (g/cm^3) and number of distinct elements of ``n_eval``
  valid generated structures drawn at random (seeded) against all reference structures.
* CSP: ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist(pred, gt)[0]``; match rate
  over all pairs, RMSE over matched pairs only.

Documented deviations from CDVAE:
* Composition scaler: CDVAE standardises the magpie features with fixed means/stds shipped in its
  ``common/constants.py``; those numbers are not reproduced here. :meth:`CompositionScaler.fit`
  computes mean/std over the reference fingerprints instead, so AMCD values and the composition
  part of COV are on a (slightly) different scale than in the papers. A user who has CDVAE's
  constants can pass them to ``CompositionScaler(means, stds)``.
* smact >= 3.0 changed ``Element.oxidation_states`` to the ICSD-2024 list; CDVAE ran smact 2.2,
  whose default was the 2014 SMACT list. We use ``Element.oxidation_states_smact14`` (same data).
* matminer >= 0.8 imputes missing magpie data by default; CDVAE ran 0.7 without imputation and its
  scaler turned NaN into 0 after standardising. We use ``impute_nan=False`` and the same NaN -> 0.
* Reference structures whose fingerprint fails are dropped from COV (CDVAE would crash on them);
  their count is returned as ``n_ref_fingerprint_failed``.
* The ``n_eval`` valid samples for the Wasserstein distances are drawn with
  ``numpy.random.default_rng(seed)``; CDVAE draws with the unseeded global ``np.random.choice``,
  so its subset is not reproducible and ours is not the same subset.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from workbench.errors import ConfigError, DataError, InputError

__all__ = [
    "COV_CUTOFFS", "MAX_OX_COMBINATIONS", "structure_validity", "composition_validity", "is_valid",
    "structure_fingerprint", "composition_fingerprint", "compute_fingerprints", "FingerprintCache",
    "CompositionScaler", "coverage", "wasserstein_density", "wasserstein_num_elements",
    "csp_match", "csp_match_multi", "generation_metrics", "csp_metrics",
]

#: (structure cutoff, composition cutoff) of CDVAE's ``COV_Cutoffs`` (mp20 / carbon / perovskite).
COV_CUTOFFS: dict[str, tuple[float, float]] = {"mp_20": (0.4, 10.0), "carbon_24": (0.2, 4.0), "perov_5": (0.2, 4.0)}
#: DiffCSP's ``smact_validity`` gives up (invalid) above this many oxidation-state combinations.
MAX_OX_COMBINATIONS = 10_000_000
#: Featurizer identity stored in fingerprint caches; a cache written with another one is refused.
FINGERPRINT_TAG = "crystalnn-ops-mean|magpie-impute_nan=False|v1"

_FEATURIZERS: dict[str, Any] = {}


def _featurizers() -> tuple[Any, Any]:
    if not _FEATURIZERS:
        from matminer.featurizers.composition.composite import ElementProperty
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint
        _FEATURIZERS["struct"] = CrystalNNFingerprint.from_preset("ops")
        _FEATURIZERS["comp"] = ElementProperty.from_preset("magpie", impute_nan=False)
    return _FEATURIZERS["struct"], _FEATURIZERS["comp"]


def _progress(iterable: Iterable, total: int, desc: str, progress: bool) -> Iterable:
    if not progress:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------------
# validity
# --------------------------------------------------------------------------------------------------
def structure_validity(structure: Any, cutoff: float = 0.5) -> bool:
    """True when the smallest periodic interatomic distance is >= ``cutoff`` (A) and the volume
    >= 0.1 A^3, with finite positive lattice lengths and finite coordinates. ``None`` -> False.

    Distances are pymatgen's ``distance_matrix`` (minimum image under periodic boundaries); a
    one-atom cell has no pair and passes the distance test, as in CDVAE."""
    if structure is None:
        return False
    lattice = structure.lattice
    lengths = np.asarray(lattice.abc, dtype=float)
    if not np.all(np.isfinite(lengths)) or np.any(lengths <= 0):
        return False
    if not np.all(np.isfinite(lattice.matrix)) or not np.all(np.isfinite(structure.frac_coords)):
        return False
    volume = float(structure.volume)
    if not math.isfinite(volume) or volume < 0.1:
        return False
    if len(structure) < 2:
        return True
    dist = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dist, np.inf)
    return bool(dist.min() >= cutoff)


def _elements_counts(item: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(element symbols, integer counts reduced by their gcd) of a Structure or (elements, counts)."""
    from pymatgen.core import Element
    if hasattr(item, "composition"):
        comp = item.composition.element_composition
        symbols, counts = [], []
        for el, amount in comp.items():
            if abs(amount - round(amount)) > 1e-6:
                raise DataError(f"site occupancies give a non-integer count {amount} of {el}; only ordered "
                                "structures are supported")
            symbols.append(el.symbol)
            counts.append(int(round(amount)))
    else:
        try:
            elements, counts_in = item
        except (TypeError, ValueError):
            raise InputError("composition_validity takes a Structure or a pair (elements, counts), "
                             f"got {type(item).__name__}") from None
        if len(elements) != len(counts_in) or len(elements) == 0:
            raise InputError(f"elements and counts must be non-empty and of equal length, got "
                             f"{len(elements)} elements and {len(counts_in)} counts")
        merged: Counter = Counter()
        for e, c in zip(elements, counts_in):
            sym = Element.from_Z(int(e)).symbol if isinstance(e, (int, np.integer)) else Element(str(e)).symbol
            if int(c) != c or c <= 0:
                raise InputError(f"counts must be positive integers, got {c!r} for {sym}")
            merged[sym] += int(c)
        symbols, counts = list(merged), list(merged.values())
    g = math.gcd(*counts)
    return tuple(symbols), tuple(c // g for c in counts)


def _pauling_ok(ox_states: Sequence[int], enegs: Sequence[float | None]) -> bool:
    """The Pauling test as CDVAE got it from smact 2.2: ``smact.screening.pauling_test`` when every
    electronegativity is known. With a missing one, smact 2.2 raised TypeError at the first
    cation/anion pair that involved it and CDVAE then assumed the test passed; smact 4 returns
    False instead, so that case is reproduced here: pairs are scanned in smact's order and the
    answer is True as soon as an opposite-sign pair with a missing value is reached."""
    from smact.screening import pauling_test
    if all(e is not None for e in enegs):
        return bool(pauling_test(ox_states, enegs))
    for (o1, e1), (o2, e2) in itertools.combinations(list(zip(ox_states, enegs)), 2):
        if (o1 > 0 and o2 < 0) or (o1 < 0 and o2 > 0):
            if e1 is None or e2 is None:
                return True  # CDVAE: "no electronegativity data, assume it is okay"
            if not pauling_test((o1, o2), (e1, e2)):
                return False
    return True


def composition_validity(item: Any, use_pauling_test: bool = True, include_alloys: bool = True) -> bool:
    """SMACT validity of a Structure or of ``(elements, counts)`` (symbols or atomic numbers), as
    CDVAE's ``smact_validity``: True for one element, True for all metals when ``include_alloys``,
    otherwise True when some product of the elements' oxidation states is charge neutral at the
    gcd-reduced stoichiometry (``smact.neutral_ratios(ox, stoichs=[(c,)...], threshold=max(c))``)
    and passes the Pauling electronegativity test. Above DiffCSP's 1e7 oxidation-state
    combinations it gives up (False). ``None`` -> False.

    smact API used (smact 4.0.2): ``smact.element_dictionary`` for ``Element`` objects,
    ``Element.oxidation_states_smact14`` (the smact < 3.0 default list CDVAE ran with; smact >= 3.0's
    ``oxidation_states`` is the ICSD-2024 list), ``Element.pauling_eneg`` (None when unknown),
    ``smact.metals``, ``smact.neutral_ratios`` (returns a list in smact 4; smact 2.2 returned
    ``(bool, list)``) and ``smact.screening.pauling_test``. Elements without oxidation states
    (He, Ne, Ar) give no combination, hence False."""
    import smact
    if item is None:
        return False
    symbols, counts = _elements_counts(item)
    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    space = smact.element_dictionary(symbols)
    elems = [space[s] for s in symbols]
    enegs = [e.pauling_eneg for e in elems]
    ox_lists = [list(e.oxidation_states_smact14 or []) for e in elems]
    n_combos = 1
    for ox in ox_lists:
        n_combos *= len(ox)
    if n_combos == 0 or n_combos > MAX_OX_COMBINATIONS:
        return False
    stoichs = [(c,) for c in counts]
    threshold = max(counts)
    for ox_states in itertools.product(*ox_lists):
        if not smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold):
            continue
        if not use_pauling_test or _pauling_ok(ox_states, enegs):
            return True
    return False


def is_valid(structure: Any, cutoff: float = 0.5) -> bool:
    """Structural AND compositional validity (without the fingerprint condition)."""
    return structure is not None and structure_validity(structure, cutoff) and composition_validity(structure)


# --------------------------------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------------------------------
def structure_fingerprint(structure: Any) -> np.ndarray | None:
    """Mean over sites of matminer's ``CrystalNNFingerprint.from_preset("ops")`` (61 floats); None
    when the structure is None or the featurizer throws (CDVAE then counts the crystal invalid)."""
    if structure is None:
        return None
    cnn, _ = _featurizers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sites = [cnn.featurize(structure, i) for i in range(len(structure))]
        fp = np.asarray(sites, dtype=float).mean(axis=0)
    except Exception:  # noqa: BLE001 - any featurizer failure means "no fingerprint", as in CDVAE
        return None
    return fp


def composition_fingerprint(structure: Any) -> np.ndarray | None:
    """matminer ``ElementProperty.from_preset("magpie", impute_nan=False)`` of the composition
    (132 floats, NaN where magpie has no data; the scaler maps NaN to 0); None for None."""
    if structure is None:
        return None
    _, ep = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ep.featurize(structure.composition.element_composition), dtype=float)


def structure_key(structure: Any) -> str:
    """A content key (sha1 of lattice, atomic numbers and fractional coordinates at 1e-6)."""
    h = hashlib.sha1()
    h.update(np.round(np.asarray(structure.lattice.matrix, dtype=float), 6).tobytes())
    h.update(np.asarray(structure.atomic_numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(structure.frac_coords, dtype=float), 6).tobytes())
    return h.hexdigest()


class FingerprintCache:
    """Fingerprints kept by key, in memory and optionally in an ``.npz`` file (no pickle).

    The file holds ``keys`` (str), ``struct`` (N x 61, NaN rows where the fingerprint failed),
    ``struct_ok`` (bool), ``comp`` (N x 132) and ``tag`` (the featurizer identity). It is written
    atomically (temporary file in the same folder, then ``os.replace``). A file written with another
    featurizer tag is refused with a DataError naming it."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._data: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            self._load()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> tuple[np.ndarray | None, np.ndarray] | None:
        return self._data.get(key)

    def put(self, key: str, struct_fp: np.ndarray | None, comp_fp: np.ndarray) -> None:
        self._data[key] = (None if struct_fp is None else np.asarray(struct_fp, dtype=float),
                           np.asarray(comp_fp, dtype=float))
        self._dirty = True

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                tag = str(z["tag"])
                keys, struct, ok, comp = z["keys"], z["struct"], z["struct_ok"], z["comp"]
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"not a readable fingerprint cache ({type(exc).__name__}: {exc})",
                            file=self.path) from None
        if tag != FINGERPRINT_TAG:
            raise DataError(f"fingerprint cache was written with '{tag}', this code computes "
                            f"'{FINGERPRINT_TAG}'; delete the file to recompute", file=self.path)
        for k, s, o, c in zip(keys.tolist(), struct, ok, comp):
            self._data[str(k)] = (s.copy() if o else None, c.copy())

    def save(self) -> None:
        """Write the file (if a path was given and something changed), atomically."""
        if self.path is None or not self._dirty or not self._data:
            return
        keys = list(self._data)
        n_s = next((len(s) for s, _ in self._data.values() if s is not None), 61)
        struct = np.full((len(keys), n_s), np.nan)
        ok = np.zeros(len(keys), dtype=bool)
        comp = np.stack([self._data[k][1] for k in keys])
        for i, k in enumerate(keys):
            s = self._data[k][0]
            if s is not None:
                struct[i], ok[i] = s, True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype=str), struct=struct, struct_ok=ok, comp=comp,
                         tag=np.array(FINGERPRINT_TAG))
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._dirty = False


def compute_fingerprints(structures: Sequence[Any], *, cache: FingerprintCache | Mapping | None = None,
                         ids: Sequence[str] | None = None, progress: bool = True,
                         desc: str = "fingerprints") -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """(structure fingerprints, composition fingerprints) of each structure; both None for a None
    structure, and both None when the structure fingerprint fails (as CDVAE sets them).

    ``cache``: a :class:`FingerprintCache` (saved at the end) or a plain dict, looked up by ``ids``
    (default: :func:`structure_key` of each structure)."""
    if ids is not None and len(ids) != len(structures):
        raise InputError(f"ids has {len(ids)} entries but there are {len(structures)} structures")
    s_fps: list[np.ndarray | None] = []
    c_fps: list[np.ndarray | None] = []
    for i, s in enumerate(_progress(structures, len(structures), desc, progress)):
        if s is None:
            s_fps.append(None)
            c_fps.append(None)
            continue
        key = None
        if cache is not None:
            key = str(ids[i]) if ids is not None else structure_key(s)
            hit = cache.get(key)
            if hit is not None:
                sf, cf = hit
                s_fps.append(sf)
                c_fps.append(None if sf is None else cf)
                continue
        sf = structure_fingerprint(s)
        cf = composition_fingerprint(s)
        if cache is not None:
            if isinstance(cache, FingerprintCache):
                cache.put(key, sf, cf)
            else:
                cache[key] = (sf, cf)
        s_fps.append(sf)
        c_fps.append(None if sf is None else cf)
    if isinstance(cache, FingerprintCache):
        cache.save()
    return s_fps, c_fps


class CompositionScaler:
    """Standardises magpie composition fingerprints: ``(x - mean) / std``, NaN -> 0 afterwards.

    Documented deviation from CDVAE: CDVAE uses fixed means/stds shipped in its
    ``common/constants.py`` (``CompScaler``); they are not copied here. :meth:`fit` takes the
    mean and (population) standard deviation over the reference fingerprints instead, ignoring
    NaN; a feature whose std is below ``min_std`` (constant over the reference, e.g. every feature
    of the one-element Carbon-24) or undefined gets std 1, and an undefined mean gets 0 (the
    conventions of CDVAE's ``StandardScaler.fit``). Composition distances, AMCD and the COV
    composition threshold therefore act on a reference-dependent scale, not on the papers'.
    Fit it on a large reference set (the whole test split): a small one has small stds and
    inflates composition distances (20 Perov-5 test structures against 20 validation ones gave
    AMCD ~9-10, above the Perov-5 cutoff of 4, so COV was 0)."""

    def __init__(self, means: Sequence[float], stds: Sequence[float]) -> None:
        self.means = np.asarray(means, dtype=float)
        self.stds = np.asarray(stds, dtype=float)
        if self.means.shape != self.stds.shape or self.means.ndim != 1:
            raise InputError(f"means and stds must be 1-D of equal length, got {self.means.shape} "
                             f"and {self.stds.shape}")

    @classmethod
    def fit(cls, reference_fps: Sequence[Any], min_std: float = 1e-8) -> "CompositionScaler":
        fps = [np.asarray(f, dtype=float) for f in reference_fps if f is not None]
        if not fps:
            raise InputError("CompositionScaler.fit needs at least one reference composition fingerprint")
        x = np.stack(fps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(x, axis=0)
            stds = np.nanstd(x, axis=0)
        means = np.where(np.isnan(means), 0.0, means)
        stds = np.where(np.isnan(stds) | (stds < min_std), 1.0, stds)
        return cls(means, stds)

    def transform(self, fps: Sequence[Any]) -> np.ndarray:
        x = np.asarray(fps, dtype=float)
        if x.ndim == 1:
            x = x[None]
        if x.size == 0:
            return np.zeros((0, self.means.shape[0]))
        if x.shape[1] != self.means.shape[0]:
            raise InputError(f"composition fingerprints have {x.shape[1]} features, the scaler {self.means.shape[0]}")
        out = (x - self.means) / self.stds
        return np.where(np.isnan(out), 0.0, out)


# --------------------------------------------------------------------------------------------------
# coverage and property distances
# --------------------------------------------------------------------------------------------------
def _fp_matrix(fps: Sequence[Any], name: str) -> np.ndarray:
    rows = [np.asarray(f, dtype=float) for f in fps]
    if not rows:
        raise InputError(f"{name} is empty")
    try:
        return np.stack(rows)
    except ValueError:
        raise InputError(f"{name} rows have different lengths") from None


def coverage(gen_struct_fps: Sequence[Any], gen_comp_fps: Sequence[Any], ref_struct_fps: Sequence[Any],
             ref_comp_fps: Sequence[Any], struct_cutoff: float, comp_cutoff: float,
             n_generated: int | None = None) -> dict[str, float]:
    """CDVAE's ``compute_cov`` on fingerprints (composition fingerprints already standardised).

    Euclidean distances between every generated and every reference fingerprint, separately for
    structure and composition. Recall = fraction of REFERENCE items whose nearest generated
    structure fingerprint is within ``struct_cutoff`` AND nearest generated composition
    fingerprint within ``comp_cutoff``; precision = number of GENERATED items with the same
    property towards the reference, divided by ``n_generated`` (all generated structures, including
    those without fingerprints; default: the number of generated rows given). A generated row with
    a None fingerprint is dropped (it only counts in ``n_generated``).

    Returns cov_recall, cov_precision, amsd_recall, amsd_precision, amcd_recall, amcd_precision
    (mean nearest structure / composition distance from the reference side / generated side)."""
    from scipy.spatial.distance import cdist
    if len(gen_struct_fps) != len(gen_comp_fps):
        raise InputError(f"gen_struct_fps has {len(gen_struct_fps)} rows, gen_comp_fps {len(gen_comp_fps)}")
    if len(ref_struct_fps) != len(ref_comp_fps):
        raise InputError(f"ref_struct_fps has {len(ref_struct_fps)} rows, ref_comp_fps {len(ref_comp_fps)}")
    if n_generated is None:
        n_generated = len(gen_struct_fps)
    pairs = [(s, c) for s, c in zip(gen_struct_fps, gen_comp_fps) if s is not None and c is not None]
    if n_generated < len(pairs) or n_generated <= 0:
        raise InputError(f"n_generated must be >= the {len(pairs)} generated fingerprints and > 0, got {n_generated}")
    ref_s = _fp_matrix(ref_struct_fps, "ref_struct_fps")
    ref_c = _fp_matrix(ref_comp_fps, "ref_comp_fps")
    if not pairs:  # nothing generated has a fingerprint: nothing is covered
        return {"cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": math.nan, "amsd_precision": math.nan,
                "amcd_recall": math.nan, "amcd_precision": math.nan}
    gen_s = _fp_matrix([p[0] for p in pairs], "gen_struct_fps")
    gen_c = _fp_matrix([p[1] for p in pairs], "gen_comp_fps")
    d_s = cdist(gen_s, ref_s)  # (n_gen, n_ref)
    d_c = cdist(gen_c, ref_c)
    s_rec, s_prec = d_s.min(axis=0), d_s.min(axis=1)
    c_rec, c_prec = d_c.min(axis=0), d_c.min(axis=1)
    recall = float(np.mean((s_rec <= struct_cutoff) & (c_rec <= comp_cutoff)))
    precision = float(np.sum((s_prec <= struct_cutoff) & (c_prec <= comp_cutoff)) / n_generated)
    return {"cov_recall": recall, "cov_precision": precision,
            "amsd_recall": float(s_rec.mean()), "amsd_precision": float(s_prec.mean()),
            "amcd_recall": float(c_rec.mean()), "amcd_precision": float(c_prec.mean())}


def _sample_valid(gen: Sequence[Any], gen_valid: Sequence[bool] | None, n_eval: int | None, seed: int,
                  allow_fewer: bool) -> list[Any]:
    if gen_valid is None:
        gen_valid = [is_valid(s) for s in gen]
    elif len(gen_valid) != len(gen):
        raise InputError(f"gen_valid has {len(gen_valid)} entries but there are {len(gen)} generated structures")
    valid = [s for s, v in zip(gen, gen_valid) if v and s is not None]
    if n_eval is None:
        return valid
    if len(valid) < n_eval:
        if not allow_fewer:
            raise InputError(f"only {len(valid)} valid generated structures, {n_eval} asked for the "
                             "Wasserstein distances (n_eval); generate more, lower n_eval or pass allow_fewer=True")
        return valid          # possibly empty: generation_metrics then leaves the distances out
    idx = np.random.default_rng(seed).choice(len(valid), n_eval, replace=False)
    return [valid[i] for i in idx]


def _wdist(gen: Sequence[Any], ref: Sequence[Any], prop, n_eval, seed, allow_fewer, gen_valid) -> float:
    from scipy.stats import wasserstein_distance
    sample = _sample_valid(gen, gen_valid, n_eval, seed, allow_fewer)
    refs = [r for r in ref if r is not None]
    if not refs:
        raise InputError("no reference structure for the Wasserstein distances")
    return float(wasserstein_distance([prop(s) for s in sample], [prop(r) for r in refs]))


def _density(s: Any) -> float:
    return float(s.density)


def _num_elements(s: Any) -> int:
    return len(s.composition.elements)


def wasserstein_density(gen: Sequence[Any], ref: Sequence[Any], *, n_eval: int | None = 1000, seed: int = 0,
                        allow_fewer: bool = False, gen_valid: Sequence[bool] | None = None) -> float:
    """1-D Wasserstein distance (scipy) between the densities (g/cm^3) of ``n_eval`` valid
    generated structures drawn without replacement (``numpy.random.default_rng(seed)``) and of
    all reference structures. ``gen_valid`` (default :func:`is_valid`) selects the valid ones.
    Fewer valid than ``n_eval`` raises an InputError unless ``allow_fewer`` (then all valid ones
    are used); ``n_eval=None`` uses all valid ones."""
    return _wdist(gen, ref, _density, n_eval, seed, allow_fewer, gen_valid)


def wasserstein_num_elements(gen: Sequence[Any], ref: Sequence[Any], *, n_eval: int | None = 1000, seed: int = 0,
                             allow_fewer: bool = False, gen_valid: Sequence[bool] | None = None) -> float:
    """As :func:`wasserstein_density` for the number of distinct elements of each structure."""
    return _wdist(gen, ref, _num_elements, n_eval, seed, allow_fewer, gen_valid)


# --------------------------------------------------------------------------------------------------
# CSP
# --------------------------------------------------------------------------------------------------
def _valid_mask(structures: Sequence[Any], fingerprint_gate: bool) -> list[bool]:
    out = []
    for s in structures:
        ok = is_valid(s)
        if ok and fingerprint_gate:
            ok = structure_fingerprint(s) is not None
        out.append(ok)
    return out


def _rms(matcher: Any, pred: Any, gt: Any) -> float | None:
    if pred is None or gt is None:
        return None
    try:
        res = matcher.get_rms_dist(pred, gt)
    except Exception:  # noqa: BLE001 - the reference scripts count a matcher failure as no match
        return None
    return None if res is None else float(res[0])


def _check_require_valid(require_valid: Any) -> str:
    if require_valid is True:
        return "both"
    if require_valid is False:
        return "none"
    if require_valid == "pred":
        return "pred"
    raise ConfigError("require_valid must be True (pred and gt, DiffCSP), 'pred' (CDVAE) or False, "
                      f"got {require_valid!r}")


def csp_match(preds: Sequence[Any], gts: Sequence[Any], stol: float = 0.5, angle_tol: float = 10,
              ltol: float = 0.3, require_valid: bool | str = True, *, fingerprint_gate: bool = True,
              progress: bool = False) -> dict[str, float]:
    """Match rate and RMSE of predicted against ground-truth structures, pair by pair.

    ``StructureMatcher(stol, angle_tol, ltol).get_rms_dist(pred, gt)[0]`` (pymatgen normalises the
    RMS displacement by (V/N)^(1/3)); a pair matches when that is not None. match_rate = matched /
    all pairs; rmse = mean RMS over matched pairs (NaN when nothing matched); n = number of pairs.

    ``require_valid``: True (DiffCSP's ``RecEval``) counts a pair only when pred AND gt are valid;
    ``"pred"`` is CDVAE's ``RecEval``, which checks the prediction only; False checks neither.
    Valid = structurally and compositionally valid, and (``fingerprint_gate``, as both reference
    scripts do through their ``Crystal`` class) the CrystalNN fingerprint can be computed; the
    fingerprint costs ~0.05-0.2 s per structure, ``fingerprint_gate=False`` skips it."""
    if len(preds) != len(gts):
        raise InputError(f"preds has {len(preds)} structures but gts has {len(gts)}; they are compared pair by pair")
    if len(preds) == 0:
        raise InputError("csp_match got no pairs")
    out = csp_match_multi([preds], gts, stol, angle_tol, ltol, require_valid, fingerprint_gate=fingerprint_gate,
                          progress=progress)
    del out["k"]
    return out


def csp_match_multi(pred_lists: Sequence[Sequence[Any]], gts: Sequence[Any], stol: float = 0.5,
                    angle_tol: float = 10, ltol: float = 0.3, require_valid: bool | str = "pred", *,
                    fingerprint_gate: bool = True, progress: bool = False) -> dict[str, float]:
    """Best of k: ``pred_lists[j][i]`` is the j-th prediction for ``gts[i]``; an item matches when
    any of its k predictions matches, and its RMS is the smallest RMS among them (DiffCSP's
    ``RecEvalBatch``). The default ``require_valid="pred"`` is what ``RecEvalBatch`` does (only the
    prediction's validity is checked); True also requires a valid gt. Returns match_rate, rmse, n, k."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    if len(pred_lists) == 0:
        raise InputError("csp_match_multi got no prediction lists")
    for j, preds in enumerate(pred_lists):
        if len(preds) != len(gts):
            raise InputError(f"prediction list {j} has {len(preds)} structures but gts has {len(gts)}")
    if len(gts) == 0:
        raise InputError("csp_match_multi got no ground-truth structures")
    mode = _check_require_valid(require_valid)
    matcher = StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)
    gt_ok = _valid_mask(gts, fingerprint_gate) if mode == "both" else [True] * len(gts)
    p_ok = [_valid_mask(preds, fingerprint_gate) if mode != "none" else [True] * len(preds) for preds in pred_lists]
    pairs = [(j, i) for j in range(len(pred_lists)) for i in range(len(gts)) if p_ok[j][i] and gt_ok[i]]
    best: list[float | None] = [None] * len(gts)
    for j, i in _progress(pairs, len(pairs), "structure matching", progress):
        r = _rms(matcher, pred_lists[j][i], gts[i])
        if r is not None and (best[i] is None or r < best[i]):
            best[i] = r
    matched = [r for r in best if r is not None]
    return {"match_rate": len(matched) / len(gts), "rmse": float(np.mean(matched)) if matched else math.nan,
            "n": float(len(gts)), "k": float(len(pred_lists))}


# --------------------------------------------------------------------------------------------------
# one-call entry points
# --------------------------------------------------------------------------------------------------
def _cutoffs(dataset: str) -> tuple[float, float]:
    if dataset not in COV_CUTOFFS:
        raise ConfigError(f"unknown dataset '{dataset}' for the COV cutoffs; choose one of {sorted(COV_CUTOFFS)}")
    return COV_CUTOFFS[dataset]


def generation_metrics(gen_structures: Sequence[Any], ref_structures: Sequence[Any], dataset: str = "perov_5",
                       n_eval: int | None = 1000, seed: int = 0, *, allow_fewer: bool = False,
                       scaler: CompositionScaler | None = None,
                       ref_cache: FingerprintCache | Mapping | None = None, ref_ids: Sequence[str] | None = None,
                       progress: bool = True) -> dict[str, float]:
    """Ab initio generation metrics of CDVAE's ``GenEval`` as one flat dict of floats.

    struct_valid, comp_valid, valid (fractions of ALL generated; valid also needs a fingerprint),
    cov_recall, cov_precision, amsd_*/amcd_* (:func:`coverage` with :data:`COV_CUTOFFS[dataset]`,
    composition fingerprints standardised by ``scaler``, default :meth:`CompositionScaler.fit` on
    the reference), wdist_density and wdist_num_elems (``n_eval`` valid samples, ``seed``), and
    counts n_generated, n_valid, n_wdist, n_ref, n_ref_fingerprint_failed.

    ``ref_cache`` / ``ref_ids``: cache of the reference fingerprints (see :func:`compute_fingerprints`)."""
    struct_cut, comp_cut = _cutoffs(dataset)
    gen = list(gen_structures)
    ref = list(ref_structures)
    if not gen:
        raise InputError("generation_metrics got no generated structures")
    if not any(r is not None for r in ref):
        raise InputError("generation_metrics got no reference structures")
    if n_eval is not None and (isinstance(n_eval, bool) or int(n_eval) != n_eval or n_eval <= 0):
        raise ConfigError(f"n_eval must be a positive integer or None, got {n_eval!r}")
    gen_sfp, gen_cfp = compute_fingerprints(gen, progress=progress, desc="fingerprints (generated)")
    ref_sfp, ref_cfp = compute_fingerprints(ref, cache=ref_cache, ids=ref_ids, progress=progress,
                                            desc="fingerprints (reference)")
    struct_ok = [structure_validity(s) for s in gen]
    comp_ok = [composition_validity(s) for s in gen]
    valid = [a and b and f is not None for a, b, f in zip(struct_ok, comp_ok, gen_sfp)]
    ref_pairs = [(s, c) for r, s, c in zip(ref, ref_sfp, ref_cfp) if r is not None and s is not None]
    if not ref_pairs:
        raise DataError("no reference structure has a fingerprint")
    if scaler is None:
        scaler = CompositionScaler.fit([c for _, c in ref_pairs])
    gen_keep = [(s, c) for s, c in zip(gen_sfp, gen_cfp) if s is not None and c is not None]
    gen_c = list(scaler.transform([c for _, c in gen_keep])) if gen_keep else []
    cov = coverage([s for s, _ in gen_keep], gen_c, [s for s, _ in ref_pairs],
                   list(scaler.transform([c for _, c in ref_pairs])), struct_cut, comp_cut, n_generated=len(gen))
    out = {"struct_valid": float(np.mean(struct_ok)), "comp_valid": float(np.mean(comp_ok)),
           "valid": float(np.mean(valid))}
    out.update(cov)
    sample = _sample_valid(gen, valid, n_eval, seed, allow_fewer)
    refs = [r for r in ref if r is not None]
    from scipy.stats import wasserstein_distance
    if sample:    # with no valid sample (allow_fewer) the distances do not exist: left out, n_wdist says 0
        out["wdist_density"] = float(wasserstein_distance([_density(s) for s in sample], [_density(r) for r in refs]))
        out["wdist_num_elems"] = float(wasserstein_distance([_num_elements(s) for s in sample],
                                                            [_num_elements(r) for r in refs]))
    out.update({"n_generated": float(len(gen)), "n_valid": float(sum(valid)), "n_wdist": float(len(sample)),
                "n_ref": float(len(refs)), "n_ref_fingerprint_failed": float(len(refs) - len(ref_pairs))})
    return out


def csp_metrics(preds: Sequence[Any], gts: Sequence[Any], stol: float = 0.5, angle_tol: float = 10,
                ltol: float = 0.3, require_valid: bool | str | None = None, *, fingerprint_gate: bool = True,
                progress: bool = True) -> dict[str, float]:
    """CSP metrics as one flat dict: {match_rate, rmse, n} for one prediction per gt
    (:func:`csp_match`, default ``require_valid=True`` as DiffCSP), or {match_rate, rmse, n, k}
    when ``preds`` is a list of k prediction lists (:func:`csp_match_multi`, default ``"pred"``)."""
    multi = len(preds) > 0 and isinstance(preds[0], (list, tuple))
    if multi:
        rv = "pred" if require_valid is None else require_valid
        return csp_match_multi(preds, gts, stol, angle_tol, ltol, rv, fingerprint_gate=fingerprint_gate,
                               progress=progress)
    rv = True if require_valid is None else require_valid
    return csp_match(preds, gts, stol, angle_tol, ltol, rv, fingerprint_gate=fingerprint_gate, progress=progress)

"""Crystal metrics (CDVAE / DiffCSP definitions) on hand-made pymatgen structures.

Each test names, in its docstring, the bug it guards against; every such bug was planted in
domains/crystals/metrics.py and made the test fail before it was reverted."""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest

pytest.importorskip("pymatgen")
pytest.importorskip("smact")
pytest.importorskip("matminer")

from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

from workbench.domains.crystals import metrics as M  # noqa: E402
from workbench.errors import ConfigError, DataError, InputError  # noqa: E402


# ------------------------------------------------------------------ hand-made structures
@functools.lru_cache(maxsize=None)
def _from_spacegroup(sg: str, a: float, species: tuple, coords: tuple) -> Structure:
    return Structure.from_spacegroup(sg, Lattice.cubic(a), list(species), [list(c) for c in coords])


def nacl() -> Structure:  # conventional cell, 8 sites
    return _from_spacegroup("Fm-3m", 5.64, ("Na", "Cl"), ((0, 0, 0), (0.5, 0.5, 0.5))).copy()


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def srtio3() -> Structure:
    return _from_spacegroup("Pm-3m", 3.905, ("Sr", "Ti", "O"), ((0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0))).copy()


def diamond() -> Structure:
    return _from_spacegroup("Fd-3m", 3.567, ("C",), ((0, 0, 0),)).copy()


def close_pair(d: float = 0.3) -> Structure:
    """Na and Cl ``d`` A apart inside a 5 A cubic cell (no wrap-around)."""
    return Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.2, 0.2, 0.2], [0.2 + d / 5.0, 0.2, 0.2]])


def cuzn() -> Structure:
    """beta-brass, an all-metal alloy (CsCl type)."""
    return Structure(Lattice.cubic(2.95), ["Cu", "Zn"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl2() -> Structure:
    """NaCl2: no charge-neutral assignment of SMACT oxidation states (Na +-1, Cl in -1..7)."""
    return Structure(Lattice.cubic(6.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])


def strained(s: Structure, factors=(1.02, 1.0, 1.0)) -> Structure:
    a, b, c = s.lattice.abc
    lat = Lattice.from_parameters(a * factors[0], b * factors[1], c * factors[2], *s.lattice.angles)
    return Structure(lat, s.species, s.frac_coords)


def strained_nacl(d: float = 0.05) -> Structure:
    """Primitive NaCl with a stretched by 2 % and one atom moved d A along a: a small positive RMS. (A pure
    lattice strain with unchanged fractional coordinates has RMS 0: pymatgen measures the
    displacement in the averaged lattice.)"""
    s = strained(nacl().get_primitive_structure())
    s.translate_sites([1], [d / s.lattice.a, 0, 0], frac_coords=True)
    return s


def ti_shifted(d: float) -> Structure:
    s = srtio3()
    s.translate_sites([1], [d / 3.905, 0, 0], frac_coords=True)
    return s


def displaced_srtio3(d: float = 0.8) -> Structure:
    """SrTiO3 with Ti moved +d and Sr moved -d along x (A): an RMS the matcher's site tolerance
    accepts at stol=0.5 but not at pymatgen's default 0.3."""
    s = srtio3()
    s.translate_sites([1], [d / 3.905, 0, 0], frac_coords=True)
    s.translate_sites([0], [-d / 3.905, 0, 0], frac_coords=True)
    return s


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ------------------------------------------------------------------ structural validity
def test_structure_validity_accepts_crystals_and_rejects_a_close_pair():
    """Guards: the diagonal of the distance matrix (0) taken as the minimum distance (everything
    invalid), or a cutoff other than 0.5 A; a 0.3 A pair must be rejected, 0.6 A accepted."""
    for s in (nacl(), cscl(), srtio3(), diamond(), cuzn()):
        assert M.structure_validity(s), s.formula
    assert not M.structure_validity(close_pair(0.3))
    assert M.structure_validity(close_pair(0.6))
    assert not M.structure_validity(None)


def test_structure_validity_uses_periodic_distances():
    """Guards: distances without periodic boundaries. Two atoms at x = 0.01 and 0.99 of a 5 A cell
    are 4.9 A apart in the cell but 0.1 A apart across the boundary; must be invalid."""
    s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]])
    assert np.linalg.norm(s.cart_coords[0] - s.cart_coords[1]) > 4.8
    assert not M.structure_validity(s)


def test_structure_validity_rejects_tiny_volume():
    """Guards: the volume >= 0.1 A^3 check missing. A one-atom cell has no pair to test, so only
    the volume check can reject a 0.4 A cube (0.064 A^3)."""
    assert not M.structure_validity(Structure(Lattice.cubic(0.4), ["C"], [[0, 0, 0]]))
    assert M.structure_validity(Structure(Lattice.cubic(2.0), ["C"], [[0, 0, 0]]))


# ------------------------------------------------------------------ compositional validity
def test_composition_validity_smact_rules():
    """Guards: charge neutrality not tested (NaCl2 accepted), the Pauling test skipped (Na2Cl is
    neutral only as Na(-1)2 Cl(+2), which the electronegativity order rejects), alloys not
    accepted (CuZn), one element not accepted (diamond), counts not reduced by their gcd (the
    8-site conventional NaCl cell is Na4Cl4; smact.neutral_ratios drops non-reduced ratios)."""
    assert M.composition_validity(nacl())  # Na4Cl4 -> NaCl
    for s in (cscl(), srtio3(), diamond(), cuzn()):
        assert M.composition_validity(s), s.formula
    assert not M.composition_validity(nacl2())
    assert not M.composition_validity((["Na", "Cl"], [2, 1]))
    assert M.composition_validity((["Na", "Cl"], [2, 1]), use_pauling_test=False)
    assert not M.composition_validity((["Cu", "Zn"], [1, 1]), include_alloys=False)
    assert M.composition_validity(([11, 17], [4, 4]))  # atomic numbers as CDVAE passes them
    assert not M.composition_validity(None)


def test_composition_validity_uses_the_smact14_oxidation_states():
    """Guards: smact >= 3's default ``Element.oxidation_states`` (ICSD 2024) used instead of the
    2014 list CDVAE ran with (smact 2.2). MgCl is valid with the 2014 list only (Mg +1 is in it);
    and on a grid of binaries the result equals smact's own smact_validity with the smact14 set."""
    from smact.screening import smact_validity
    assert M.composition_validity((["Mg", "Cl"], [1, 1]))
    assert not smact_validity("MgCl", oxidation_states_set="icsd24")
    for f, els, cnt in [("NaSe", ["Na", "Se"], [1, 1]), ("ClF2", ["Cl", "F"], [1, 2]),
                        ("K3B", ["K", "B"], [3, 1]), ("FeO", ["Fe", "O"], [1, 1]), ("TiO2", ["Ti", "O"], [1, 2])]:
        assert M.composition_validity((els, cnt)) == smact_validity(f, oxidation_states_set="smact14"), f


# ------------------------------------------------------------------ coverage (synthetic fingerprints)
def test_coverage_recall_precision_and_denominator():
    """Guards: recall and precision swapped (recall is over the REFERENCE), precision divided by
    the generated fingerprints instead of ALL generated (``n_generated``, invalid included).
    Reference {0}, generated {0, 5}: recall 1; precision 1 of 2 rows, over n_generated = 4 -> 0.25."""
    ref_s, ref_c = [np.zeros(2)], [np.zeros(3)]
    gen_s = [np.zeros(2), np.full(2, 5.0), None]
    gen_c = [np.zeros(3), np.zeros(3), None]
    out = M.coverage(gen_s, gen_c, ref_s, ref_c, 0.4, 10.0, n_generated=4)
    assert out["cov_recall"] == 1.0
    assert out["cov_precision"] == 0.25
    assert out["amsd_recall"] == 0.0
    assert out["amsd_precision"] == pytest.approx(np.sqrt(50) / 2)
    # the reverse direction: two references, one generated -> recall 0.5, precision 1
    out = M.coverage([np.zeros(2)], [np.zeros(3)], [np.zeros(2), np.full(2, 5.0)], [np.zeros(3)] * 2, 0.4, 10.0)
    assert (out["cov_recall"], out["cov_precision"]) == (0.5, 1.0)


def test_coverage_struct_and_comp_cutoffs_not_swapped():
    """Guards: the structure and composition cutoffs swapped. Structure distance 0.3 (<= 0.4) and
    composition distance 5 (<= 10) is covered with mp_20's (0.4, 10); swapped it is not."""
    struct_cut, comp_cut = M.COV_CUTOFFS["mp_20"]
    assert (struct_cut, comp_cut) == (0.4, 10.0)
    out = M.coverage([np.array([0.3, 0.0])], [np.array([5.0, 0.0])], [np.zeros(2)], [np.zeros(2)],
                     struct_cut, comp_cut)
    assert out["cov_recall"] == 1.0 and out["cov_precision"] == 1.0
    assert M.COV_CUTOFFS["perov_5"] == (0.2, 4.0) and M.COV_CUTOFFS["carbon_24"] == (0.2, 4.0)


def test_composition_scaler_fit():
    """Guards: a constant reference feature divided by std 0 (inf / NaN distances), NaN magpie
    entries left in (NaN distances): std floor -> 1, NaN -> 0 after scaling."""
    sc = M.CompositionScaler.fit([np.array([1.0, 2.0, np.nan]), np.array([3.0, 2.0, np.nan])])
    np.testing.assert_allclose(sc.means, [2.0, 2.0, 0.0])
    np.testing.assert_allclose(sc.stds, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(sc.transform([[5.0, 2.0, np.nan]]), [[3.0, 0.0, 0.0]])


# ------------------------------------------------------------------ generation metrics (real fingerprints)
def test_generation_metrics_of_a_set_against_itself():
    """Identity: COV-R = COV-P = 1, both Wasserstein distances 0, all valid; guards the whole
    pipeline (fingerprints, scaler, cutoffs) against mis-wiring."""
    structs = [nacl(), cscl(), srtio3(), diamond()]
    out = M.generation_metrics(structs, structs, dataset="perov_5", n_eval=4, seed=0, progress=False)
    assert out["cov_recall"] == 1.0 and out["cov_precision"] == 1.0
    assert out["amsd_recall"] == pytest.approx(0.0, abs=1e-9)
    assert out["wdist_density"] == pytest.approx(0.0, abs=1e-12)
    assert out["wdist_num_elems"] == pytest.approx(0.0, abs=1e-12)
    assert out["struct_valid"] == out["comp_valid"] == out["valid"] == 1.0
    assert all(isinstance(v, float) for v in out.values())


def test_generation_metrics_invalid_items_and_wasserstein_inputs():
    """Guards: the Wasserstein distances computed on invalid generated structures (only the valid
    NaCl may enter, so wdist_density = |rho(NaCl) - rho(NaCl)| = 0 against an NaCl reference);
    a None item not counted as invalid; precision divided by the valid count instead of all 4."""
    gen = [nacl(), close_pair(0.3), None, nacl2()]
    out = M.generation_metrics(gen, [nacl()], dataset="perov_5", n_eval=None, seed=0, progress=False)
    assert out["struct_valid"] == 0.5  # nacl, nacl2
    assert out["comp_valid"] == 0.5  # nacl, close pair (Na + Cl)
    assert out["valid"] == 0.25 and out["n_valid"] == 1.0
    assert out["wdist_density"] == pytest.approx(0.0, abs=1e-12)
    assert out["wdist_num_elems"] == 0.0
    assert out["cov_recall"] == 1.0
    assert out["cov_precision"] == 0.25  # only the NaCl copy is near the reference; divided by 4


def test_wasserstein_needs_enough_valid_samples_and_is_seeded():
    """Guards: silently evaluating on fewer valid structures than asked (CDVAE raises), and an
    unseeded draw (two calls with one seed must agree)."""
    gen = [nacl(), cscl(), srtio3(), close_pair(0.3)]
    ref = [diamond(), cscl()]
    with pytest.raises(InputError, match="only 3 valid"):
        M.wasserstein_density(gen, ref, n_eval=4)
    few = M.wasserstein_density(gen, ref, n_eval=4, allow_fewer=True)
    assert few == pytest.approx(M.wasserstein_density(gen[:3], ref, n_eval=None))
    many = [Structure(Lattice.cubic(4.0 + 0.05 * i), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) for i in range(40)]
    draws = [M.wasserstein_density(many, ref, n_eval=5, seed=s) for s in (3, 3, 4)]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert M.wasserstein_num_elements([srtio3()], [nacl()], n_eval=1) == 1.0


# ------------------------------------------------------------------ CSP
def test_csp_identity_and_strained_copy():
    """Identity checks: NaCl with a x1.02 matches with RMS ~0 (fractional coordinates unchanged),
    with a 0.05 A shift of one atom added it matches with a small positive RMSE; NaCl vs CsCl
    does not match."""
    out = M.csp_match([strained(nacl())], [nacl()], fingerprint_gate=False)
    assert out["match_rate"] == 1.0 and out["rmse"] < 1e-8
    out = M.csp_match([strained_nacl(0.05)], [nacl()], fingerprint_gate=False)
    assert out["match_rate"] == 1.0 and 0.005 < out["rmse"] < 0.02
    out = M.csp_match([cscl()], [nacl()], fingerprint_gate=False)
    assert out["match_rate"] == 0.0 and math.isnan(out["rmse"])


def test_csp_match_rate_and_rmse_denominators():
    """Guards: a None prediction counted as a match (match rate 1 instead of 1/3), and the RMSE
    averaged over all pairs (unmatched as 0) instead of the matched one only."""
    gts = [nacl(), nacl(), srtio3()]
    preds = [strained_nacl(0.05), None, cscl()]
    single = M.csp_match([strained_nacl(0.05)], [nacl()], fingerprint_gate=False)["rmse"]
    assert single > 0.005
    for require_valid in (True, False):  # None must not match even when validity is not checked
        out = M.csp_match(preds, gts, require_valid=require_valid, fingerprint_gate=False)
        assert out["match_rate"] == pytest.approx(1 / 3)
        assert out["rmse"] == pytest.approx(single)
        assert out["n"] == 3.0


def test_csp_uses_the_paper_tolerances():
    """Guards: pymatgen's default StructureMatcher tolerances (stol 0.3, ltol 0.2, angle_tol 5)
    instead of CDVAE's (0.5, 0.3, 10). Displaced SrTiO3 matches at stol 0.5, not at 0.3."""
    pred, gt = displaced_srtio3(0.8), srtio3()
    assert StructureMatcher().get_rms_dist(pred, gt) is None
    out = M.csp_match([pred], [gt], fingerprint_gate=False)
    assert out["match_rate"] == 1.0 and out["rmse"] > 0.1


def test_csp_require_valid_gates_pred_and_gt():
    """Guards: validity of the prediction only (CDVAE) used where DiffCSP needs both. The gt has an
    O 0.45 A from Ti (structurally invalid), the prediction 0.55 A (valid); they match
    geometrically, so only the gt gate makes the pair unmatched."""
    def squeezed(d):
        s = srtio3()
        s.replace(4, "O", [0.5, 0.5, 0.5 - d / 3.905])
        return s
    pred, gt = squeezed(0.55), squeezed(0.45)
    assert M.structure_validity(pred) and not M.structure_validity(gt)
    assert M.csp_match([pred], [gt], require_valid=True)["match_rate"] == 0.0
    assert M.csp_match([pred], [gt], require_valid="pred")["match_rate"] == 1.0
    assert M.csp_match([gt], [pred], require_valid="pred")["match_rate"] == 0.0
    assert M.csp_match([gt], [pred], require_valid=False)["match_rate"] == 1.0


def test_csp_best_of_k():
    """Guards: best-of-k taking the first prediction instead of the best one."""
    gts = [nacl(), srtio3()]
    out = M.csp_match_multi([[cscl(), ti_shifted(0.2)], [strained_nacl(0.05), ti_shifted(0.05)]], gts,
                            fingerprint_gate=False)
    assert out["match_rate"] == 1.0 and out["k"] == 2.0
    r_nacl = M.csp_match([strained_nacl(0.05)], [nacl()], fingerprint_gate=False)["rmse"]
    r_sto = M.csp_match([ti_shifted(0.05)], [srtio3()], fingerprint_gate=False)["rmse"]
    assert r_sto < 0.5 * M.csp_match([ti_shifted(0.2)], [srtio3()], fingerprint_gate=False)["rmse"]
    assert out["rmse"] == pytest.approx((r_nacl + r_sto) / 2)
    assert M.csp_metrics([[strained_nacl()]], [nacl()], fingerprint_gate=False, progress=False)["k"] == 1.0


# ------------------------------------------------------------------ errors and cache
def test_clear_errors():
    """Guards: a KeyError / silent zip truncation instead of a message naming the problem."""
    with pytest.raises(ConfigError, match="'mp20'.*carbon_24.*mp_20.*perov_5"):
        M.generation_metrics([nacl()], [nacl()], dataset="mp20", progress=False)
    with pytest.raises(InputError, match="preds has 2 structures but gts has 1"):
        M.csp_match([nacl(), nacl()], [nacl()])
    with pytest.raises(InputError, match="prediction list 1 has 1"):
        M.csp_match_multi([[nacl(), nacl()], [nacl()]], [nacl(), nacl()])
    with pytest.raises(ConfigError, match="require_valid"):
        M.csp_match([nacl()], [nacl()], require_valid="gt")
    with pytest.raises(InputError, match="equal length"):
        M.composition_validity((["Na", "Cl"], [1]))


def test_fingerprint_cache_npz_roundtrip(tmp_path, monkeypatch):
    """Guards: a pickled cache (must load with allow_pickle=False), the temporary file of the
    atomic write not moved into place, cached reference fingerprints recomputed, a cache from
    another featurizer silently reused."""
    path = tmp_path / "ref_fps.npz"
    structs = [nacl(), srtio3(), None]
    s1, c1 = M.compute_fingerprints(structs, cache=M.FingerprintCache(path), progress=False)
    assert s1[0].shape == (61,) and c1[0].shape == (132,) and s1[2] is None
    assert sorted(os.listdir(tmp_path)) == ["ref_fps.npz"]
    with np.load(path, allow_pickle=False) as z:
        assert len(z["keys"]) == 2
    monkeypatch.setattr(M, "structure_fingerprint", lambda s: (_ for _ in ()).throw(AssertionError("recomputed")))
    s2, c2 = M.compute_fingerprints(structs, cache=M.FingerprintCache(path), progress=False)
    for a, b in zip(s1[:2] + c1[:2], s2[:2] + c2[:2]):
        np.testing.assert_array_equal(a, b)
    mem: dict = {}
    monkeypatch.undo()
    M.compute_fingerprints([nacl()], cache=mem, ids=["mp-1"], progress=False)
    assert list(mem) == ["mp-1"]
    with np.load(path, allow_pickle=False) as z:
        np.savez(tmp_path / "other.npz", **{k: z[k] for k in z.files if k != "tag"}, tag=np.array("other"))
    with pytest.raises(DataError, match="other.npz.*written with 'other'"):
        M.FingerprintCache(tmp_path / "other.npz")


def test_generation_metrics_with_no_valid_sample_leave_the_distances_out():
    """Bug: an untrained model's all-invalid samples crash the metrics (scipy's empty Wasserstein)
    or report NaN distances; they must be left out, with n_wdist 0 and validity 0."""
    out = M.generation_metrics([close_pair(), None], [srtio3(), nacl()], n_eval=2, allow_fewer=True,
                               progress=False)
    assert out["valid"] == 0.0 and out["n_wdist"] == 0.0
    assert "wdist_density" not in out and all(math.isfinite(v) for v in out.values())

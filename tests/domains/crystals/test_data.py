"""The crystals data layer: CIF / CDVAE CSV reading with per-row errors, CDVAE's canonical lattice,
padded batches, the cache, native outputs, the download and the prototype stand-in.

Each test names the bug it is written against."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.errors import ConfigError, DataError, InputWarning

pytest.importorskip("pymatgen", reason="the crystals domain needs pymatgen (pip install 'workbench[crystals]')")
pytestmark = pytest.mark.usefixtures("own_cache")

from workbench.domains.crystals import data as cdata  # noqa: E402
from workbench.domains.crystals.data import CrystalDataModule, collate_crystals, download, load_crystals  # noqa: E402
from workbench.domains.crystals.io import (OutputExists, read_cdvae_csv, structure_arrays,  # noqa: E402
                                           structure_from_cif, write_cdvae_csv, write_cif)
from workbench.domains.crystals.prototypes import generate_perovskites  # noqa: E402

from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402


def _rows(path: Path, n: int) -> pd.DataFrame:
    return pd.read_csv(path, nrows=n)


def _csv(tmp_path: Path, cifs: list[str], name: str = "mine.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame({"material_id": [f"m{k}" for k in range(len(cifs))], "cif": cifs,
                  "energy": np.arange(len(cifs), dtype=float)}).to_csv(p)
    return p


def _good_cif() -> str:
    s = Structure(Lattice.cubic(4.0), ["Sr", "Ti", "O", "O", "O"],
                  [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    from pymatgen.io.cif import CifWriter
    return str(CifWriter(s))


# -- canonical lattice ---------------------------------------------------------------------------------
def test_niggli_canonical_lattice_keeps_the_structure(crystal_file):
    """Bug: the canonical lattice built from the Niggli cell's parameters but paired with the
    *unreduced* fractional coordinates (or the reduced matrix kept instead of from_parameters)."""
    skew = Structure(Lattice([[4.0, 0, 0], [3.0, 4.2, 0], [1.0, 2.5, 5.1]]), ["Si", "O", "O"],
                     [[0.1, 0.2, 0.3], [0.4, 0.1, 0.7], [0.8, 0.6, 0.2]])
    real = [structure_from_cif(c) for c in _rows(crystal_file("carbon_24/val.csv"), 4).cif]
    sm = StructureMatcher(ltol=1e-3, stol=1e-3, angle_tol=1e-2, primitive_cell=False, scale=False)
    for s in [skew] + real:
        a = structure_arrays(s)
        L = Lattice.from_parameters(*a["lengths"], *a["angles"]).matrix
        np.testing.assert_allclose(a["lattice"], L, atol=1e-12)
        assert a["frac"].min() >= 0 and a["frac"].max() < 1
        assert a["atomic_numbers"].dtype == np.int64 and a["frac"].dtype == np.float64
        rebuilt = Structure(Lattice(a["lattice"]), a["atomic_numbers"].tolist(), a["frac"])
        assert rebuilt.volume == pytest.approx(s.volume, rel=1e-9)
        assert sm.fit(rebuilt, s)
    # the skewed cell is changed by the reduction (else the test above would not test it)
    assert not np.allclose(structure_arrays(skew)["lengths"], skew.lattice.abc)


def test_left_handed_cell_is_not_mirrored():
    """Bug: a left-handed cell rebuilt from its lengths and angles (right-handed) with the same
    fractional coordinates: the mirror image (an enantiomorph) of a chiral arrangement."""
    L = np.array([[4.0, 0, 0], [0, 4.5, 0], [0, 0, -5.0]])     # det < 0
    s = Structure(Lattice(L), ["C", "N", "O", "F"], [[0, 0, 0], [.3, 0, 0], [0, .25, 0], [0.05, 0.05, .2]])
    a = structure_arrays(s, niggli=False)
    r = Structure(Lattice(a["lattice"]), a["atomic_numbers"].tolist(), a["frac"])
    # same pairwise distances and the same signed volume of the C->N, C->O, C->F triple (chirality)
    np.testing.assert_allclose(np.sort(r.distance_matrix.ravel()), np.sort(s.distance_matrix.ravel()), atol=1e-9)

    def chirality(t):   # signed volume of the nearest-image vectors C->N, C->O, C->F
        d = t.frac_coords[1:] - t.frac_coords[0]
        v = t.lattice.get_cartesian_coords(d - np.round(d))
        return np.linalg.det(v)
    assert chirality(r) == pytest.approx(chirality(s), rel=1e-9)


# -- batches -------------------------------------------------------------------------------------------------
def test_padding_and_masks_for_mixed_atom_counts(crystal_file, tmp_path):
    """Bug: masks / num_atoms taken from the padded size N instead of each crystal's n, or padded
    slots left with data."""
    crystal_file("carbon_24/val.csv")
    dm = CrystalDataModule(source="carbon_24", max_rows=24, task="gen", batch_size=24)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    n = b["num_atoms"]
    assert len(set(n.tolist())) > 2, "carbon_24 rows with several atom counts expected"
    N = int(n.max())
    assert b["x"]["frac"].shape == (24, N, 3) and b["x"]["frac"].dtype == torch.float32
    assert b["x"]["types"].dtype == torch.int64 and b["x"]["lattice"].shape == (24, 9)
    for key in ("frac", "types"):
        assert b["mask"][key].dtype == torch.float32
        torch.testing.assert_close(b["mask"][key].sum(1), n.float())
    pad = b["mask"]["frac"] == 0
    assert (b["x"]["frac"][pad] == 0).all() and (b["x"]["types"][pad] == 0).all()
    assert (b["x"]["types"][~pad] == 5).all()          # carbon: Z - 1
    assert float(b["x"]["frac"].max()) < 1.0 and float(b["x"]["frac"].min()) >= 0.0
    # CSP: the types are a condition, not a state
    dm2 = CrystalDataModule(source="carbon_24", max_rows=24, task="csp", batch_size=24)
    dm2.setup()
    c = next(iter(dm2.train_dataloader()))
    assert set(c["x"]) == {"frac", "lattice"} and set(c["mask"]) == {"frac"}
    assert (c["cond"]["types"][c["mask"]["frac"] == 1] == 5).all()


def test_float32_fractional_coordinates_stay_below_one():
    """Bug: a float64 coordinate just below 1 (0.99999999) cast to float32 becomes 1.0, outside [0, 1)."""
    item = {"frac": torch.tensor([[0.99999999, 0.5, 0.0]], dtype=torch.float64), "lattice": torch.zeros(9),
            "types": torch.tensor([5])}
    b = collate_crystals([item], "gen")
    assert float(b["x"]["frac"].max()) < 1.0


def test_standardisation_is_inverted_by_to_structures(crystal_file, capsys):
    """Bugs: to_structures forgets to undo the lattice standardisation (mean or std), or Z = types;
    training on val.csv without saying that it is not the paper's split."""
    path = crystal_file("perov_5/val.csv")
    dm = CrystalDataModule(source="perov_5", max_rows=12, task="csp", batch_size=12, max_test=4)
    dm.setup()
    assert "training on the val split, testing on test: not the paper's split" in capsys.readouterr().err
    # CrysBFN's convention: no centring (O(3) invariance of the standardised lattice), one RMS scale
    assert float(dm.lattice_std[0]) > 1.0 and float(dm.lattice_mean.abs().max()) == 0.0
    b = next(iter(torch.utils.data.DataLoader(dm.train_set, batch_size=12, collate_fn=cdata._Collate("csp"))))
    got = dm.to_structures(b["x"], template=b)
    originals = [structure_from_cif(c) for c in _rows(path, 12).cif]
    sm = StructureMatcher(ltol=1e-4, stol=1e-4, angle_tol=1e-3, primitive_cell=False, scale=False)
    for s, o in zip(got, originals):
        assert s.composition == o.composition
        assert s.volume == pytest.approx(o.volume, rel=1e-5)
        assert sm.fit(s, o)
    # generation: the types come back from the state
    dm_gen = CrystalDataModule(source="perov_5", max_rows=12, task="gen", batch_size=12, max_test=4)
    dm_gen.setup()
    bg = collate_crystals([dm_gen.train_set[i] for i in range(3)], "gen")
    got = dm_gen.to_structures(bg["x"], template=bg)
    assert [s.composition for s in got] == [o.composition for o in originals[:3]]


def test_degenerate_or_nonfinite_lattice_gives_none():
    """Bug: a NaN or singular generated lattice written as a Structure (or raising) instead of None, counted."""
    dm = CrystalDataModule(source="prototypes", n_prototypes=8, task="gen")
    dm.setup()
    b = collate_crystals([dm.train_set[i] for i in range(3)], "gen")
    x = {k: v.clone() for k, v in b["x"].items()}
    x["lattice"][1] = float("nan")
    x["lattice"][2] = (-dm.lattice_mean / dm.lattice_std).float()        # L = 0
    out = dm.to_structures(x, template=b)
    assert out[0] is not None and out[1] is None and out[2] is None and dm.last_invalid == 2


# -- bad rows --------------------------------------------------------------------------------------------------
def _broken(kind: str) -> str:
    good = _good_cif()
    if kind == "parse":
        return "data_x\nthis is not a cif\n"
    if kind == "length":
        return good.replace("_cell_length_a   4.00000000", "_cell_length_a   -4.00000000")
    if kind == "site":
        lines = good.splitlines()
        k = next(i for i, line in enumerate(lines) if line.strip().startswith("Ti "))
        lines[k] = lines[k].replace("0.50000000  0.50000000  0.50000000", "1.00000000  0.00000000  0.00000000")
        return "\n".join(lines) + "\n"
    if kind == "volume":   # three 120 degree angles: a flat cell
        for ang in ("alpha", "beta", "gamma"):
            good = good.replace(f"_cell_angle_{ang}   90.00000000", f"_cell_angle_{ang}   120.00000000")
        return good
    if kind == "element":
        return good.replace("  Ti  Ti1", "  Xx  Xx1")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,words", [("parse", "does not parse"), ("length", "non-positive cell length a"),
                                        ("site", "two atoms on one site: sites 0 (Sr0) and 1"),
                                        ("element", "unknown element 'Xx'"), ("volume", "non-positive cell volume")])
def test_each_bad_row_names_file_row_and_problem(tmp_path, kind, words):
    """Bug: a bad row reported without the file or the row (or parsed silently: pymatgen accepts a
    negative length and an unknown element 'Xx' as a dummy species)."""
    assert _broken(kind) != _good_cif()
    p = _csv(tmp_path, [_good_cif(), _broken(kind), _good_cif()])
    with pytest.raises(DataError) as e:
        read_cdvae_csv(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: row 1 (material_id m1): "), msg
    assert words in msg and "\n" not in msg


def test_skip_keeps_good_rows_warns_and_lists_them(tmp_path):
    """Bug: on_error=skip dropping good rows, warning without the count / rows, or an all-bad file
    ending 'successfully' with nothing."""
    p = _csv(tmp_path, [_good_cif(), _broken("length"), _good_cif(), _broken("element")])
    listing = tmp_path / "bad.csv"
    with pytest.warns(InputWarning, match=r"skipped 2 of 4 rows \(rows 1, 3\)") as w:
        t = read_cdvae_csv(p, on_error="skip", listing=listing)
    assert "row 1 (material_id m1): non-positive cell length" in str(w[0].message) and str(listing) in str(w[0].message)
    assert [r["row"] for r in t.records] == [0, 2] and [r["material_id"] for r in t.records] == ["m0", "m2"]
    assert t.records[1]["properties"]["energy"] == 2.0
    assert pd.read_csv(listing)["row"].tolist() == [1, 3]
    allbad = _csv(tmp_path, [_broken("length"), _broken("site")], "allbad.csv")
    with pytest.raises(DataError, match="all 2 rows are bad"):
        read_cdvae_csv(allbad, on_error="skip")


def test_missing_cif_column_is_a_file_error(tmp_path):
    """Bug: a CSV without a cif column failing with a KeyError traceback."""
    p = tmp_path / "nocif.csv"
    pd.DataFrame({"material_id": ["a"], "structure": ["x"]}).to_csv(p)
    with pytest.raises(DataError, match=r"nocif.csv: no 'cif' column \(columns: Unnamed: 0, material_id, structure\)"):
        read_cdvae_csv(p)


# -- cache ---------------------------------------------------------------------------------------------------
def test_cache_hit_is_identical_weights_only_and_corrupt_cache_reparsed(tmp_path, monkeypatch):
    """Bugs: a cache read with a full unpickler (weights_only=False), a cache hit that differs from a
    fresh parse, a corrupt cache crashing, and a cache hit forgetting the bad rows (no error under
    on_error=raise after a skip run cached them)."""
    p = _csv(tmp_path, [_good_cif(), _broken("element"), _good_cif()])
    with pytest.warns(InputWarning):
        first = load_crystals(p, on_error="skip")
    files = list((tmp_path / "cache" / "crystals").glob("*.pt"))
    assert len(files) == 1
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real(*a, **k)
    monkeypatch.setattr(torch, "load", spy)
    with pytest.warns(InputWarning, match="skipped 1 of 3"):   # warned again on reuse
        second = load_crystals(p, on_error="skip")
    assert calls == [True]
    for k in ("frac", "atomic_numbers", "num_atoms", "lattice", "lengths", "angles", "row"):
        assert torch.equal(first[k], second[k])
    assert second["header"]["material_id"] == ["m0", "m2"]
    with pytest.raises(DataError, match=r"row 1 \(material_id m1\): unknown element"):
        load_crystals(p, on_error="raise")
    files[0].write_bytes(b"not a torch file")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        third = load_crystals(p, on_error="skip")
    said = [str(x.message) for x in w if issubclass(x.category, InputWarning)]
    assert "cannot load crystal cache" in said[0] and "re-parsing" in said[0] and "skipped 1 of 3" in said[1]
    assert torch.equal(third["frac"], first["frac"])


# -- outputs ---------------------------------------------------------------------------------------------------
def test_writers_refuse_to_overwrite_and_read_back(tmp_path):
    """Bug: outputs written over an existing file (a user's data), or a CSV that read_cdvae_csv cannot read."""
    structures, ids = generate_perovskites(3, seed=1)
    p = write_cdvae_csv(structures, tmp_path / "out.csv", material_ids=ids)
    t = read_cdvae_csv(p, niggli=False)
    assert [r["material_id"] for r in t.records] == ids
    with pytest.raises(OutputExists, match="out.csv: exists"):
        write_cdvae_csv(structures, p)
    write_cif(structures[0], tmp_path / "a.cif")
    with pytest.raises(OutputExists, match="a.cif: exists"):
        write_cif(structures[1], tmp_path / "a.cif")
    assert structure_from_cif((tmp_path / "a.cif").read_text()).composition == structures[0].composition


def test_save_samples_writes_cifs_csv_and_never_overwrites(tmp_path):
    """Bugs: save_samples overwriting a previous run's files, or writing some outputs before finding
    one that exists (checked up front), or CSP samples saved without their test crystal's identity."""
    dm = CrystalDataModule(source="prototypes", n_prototypes=12, task="csp", max_test=3)
    tpl = dm.sample_template(3)
    meta = tpl.pop("meta")
    assert [m["index"] for m in meta] == [0, 1, 2] and meta[0]["formula"] and meta[0]["material_id"]
    cubic = (4.0 * torch.eye(3).flatten() / dm.lattice_std.float()).expand(3, 9)    # 4 A cubes, standardised
    samples = {"frac": torch.rand(3, 5, 3), "lattice": cubic + 0.01 * torch.randn(3, 9)}
    files = dm.save_samples(samples, tmp_path / "s", meta=meta)
    assert sorted(p.name for p in files) == ["meta.json", "sample_00000.cif", "sample_00001.cif",
                                             "sample_00002.cif", "samples.csv", "samples.pt"]
    back = pd.read_csv(tmp_path / "s" / "samples.csv")
    assert back["material_id"].tolist() == [m["material_id"] for m in meta]
    assert back["formula"].tolist() == [m["formula"] for m in meta]
    before = (tmp_path / "s" / "sample_00000.cif").read_text()
    with pytest.raises(OutputExists, match="exists"):
        dm.save_samples(samples, tmp_path / "s", meta=meta)
    assert (tmp_path / "s" / "sample_00000.cif").read_text() == before
    # checked before anything is written: an existing samples.csv leaves no new CIF behind
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "samples.csv").write_text("mine\n")
    with pytest.raises(OutputExists, match="samples.csv: exists"):
        dm.save_samples(samples, tmp_path / "t", meta=meta)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["samples.csv"]


# -- download ------------------------------------------------------------------------------------------------
def test_download_verifies_the_checksum_from_a_local_url(crystal_file, tmp_path, monkeypatch):
    """Bug: a download kept without checking its sha256 (a truncated or different file used as data)."""
    src = crystal_file("perov_5/val.csv").parent.parent
    got = download("perov_5", tmp_path / "dl", splits=["val"], base_url=src.as_uri())
    assert got == [tmp_path / "dl" / "perov_5" / "val.csv"] and got[0].stat().st_size == 3673814
    monkeypatch.setitem(cdata.SHA256, "perov_5/test.csv", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch"):
        download("perov_5", tmp_path / "dl", splits=["test"], base_url=src.as_uri())
    assert not (tmp_path / "dl" / "perov_5" / "test.csv").exists()


def test_missing_split_names_the_file_and_how_to_get_it(tmp_path):
    """Bug: an absent train.csv failing as a bare FileNotFoundError with no way forward."""
    dm = CrystalDataModule(source="perov_5", train_split="train", data_dir=str(tmp_path))
    with pytest.raises(DataError) as e:
        dm.setup()
    msg = str(e.value)
    assert str(tmp_path / "perov_5" / "train.csv") in msg and "download('perov_5'" in msg and "train_split=val" in msg


# -- datamodule ------------------------------------------------------------------------------------------------
def test_config_keys_are_validated_by_name():
    """Bug: a typo in a config value accepted (and failing later, far from its cause)."""
    with pytest.raises(ConfigError, match="datamodule.source"):
        CrystalDataModule(source="perov5")
    with pytest.raises(ConfigError, match="datamodule.task"):
        CrystalDataModule(task="predict")
    with pytest.raises(ConfigError, match="datamodule.max_test"):
        CrystalDataModule(max_test=0)
    with pytest.raises(ConfigError, match="datamodule.path"):
        CrystalDataModule(source="csv")


def test_statistics_are_restored_from_the_state_dict():
    """Bug: lattice_mean / lattice_std recomputed from the data on resume instead of the checkpoint's,
    or not shared with the datasets (batches standardised with stale numbers)."""
    dm = CrystalDataModule(source="prototypes", n_prototypes=16, task="gen")
    dm.setup()
    state = dm.state_dict()
    other = CrystalDataModule(source="prototypes", n_prototypes=16, prototype_seed=5, task="gen")
    other.setup()
    assert not torch.equal(other.lattice_std, dm.lattice_std)
    other.load_state_dict(state)
    torch.testing.assert_close(other.lattice_std, dm.lattice_std)
    torch.testing.assert_close(other.lattice_mean, dm.lattice_mean)
    torch.testing.assert_close(other.train_set[0]["lattice"],
                               ((other.train_set.lattice[0] - dm.lattice_mean) / dm.lattice_std).float())
    assert other.num_atoms_hist.tolist() == dm.num_atoms_hist.tolist()


def test_generation_template_draws_atom_counts_from_the_histogram(crystal_file):
    """Bug: generation templates with a fixed atom count (not the training histogram) or unseeded."""
    crystal_file("carbon_24/val.csv")
    dm = CrystalDataModule(source="carbon_24", max_rows=30, task="gen", max_test=5)
    dm.setup()
    t1 = dm.sample_template(64, generator=torch.Generator().manual_seed(3))
    t2 = dm.sample_template(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1["num_atoms"], t2["num_atoms"])
    seen = set(t1["num_atoms"].tolist())
    assert len(seen) > 2 and all(dm.num_atoms_hist[k] > 0 for k in seen)
    torch.testing.assert_close(t1["mask"]["frac"].sum(1), t1["num_atoms"].float())
    assert [m["num_atoms"] for m in t1["meta"]] == t1["num_atoms"].tolist()


def test_prototypes_are_deterministic_perovskites():
    """Bug: the embedded stand-in depending on global random state (a different data set per run)."""
    a, ids = generate_perovskites(6, seed=2)
    np.random.seed(123)
    b, _ = generate_perovskites(6, seed=2)
    c, _ = generate_perovskites(6, seed=3)
    assert [s.as_dict() for s in a] == [s.as_dict() for s in b]
    assert [s.as_dict() for s in a] != [s.as_dict() for s in c]
    for s in a:
        assert len(s) == 5 and 3.4 < s.lattice.a < 4.6
        assert s.composition.anonymized_formula == "ABC3"


def test_own_csv_file_or_folder(tmp_path):
    """Bugs: a single CSV of one's own trained and tested on the same rows, or a folder layout
    ignoring train_split / test_split."""
    structures, ids = generate_perovskites(10, seed=4)
    one = write_cdvae_csv(structures, tmp_path / "one.csv", material_ids=ids)
    dm = CrystalDataModule(source="csv", path=str(one), task="gen")
    dm.setup()
    assert len(dm.train_set) == 8 and len(dm.test_set) == 2
    assert not set(dm.train_set.ids) & set(dm.test_set.ids)
    (tmp_path / "folder").mkdir()
    write_cdvae_csv(structures[:6], tmp_path / "folder" / "val.csv", material_ids=ids[:6])
    write_cdvae_csv(structures[6:], tmp_path / "folder" / "test.csv", material_ids=ids[6:])
    dm = CrystalDataModule(source="csv", path=str(tmp_path / "folder"), task="gen")
    dm.setup()
    assert dm.train_set.ids == ids[:6] and dm.test_set.ids == ids[6:]


def test_left_handed_generated_lattice_is_written_as_the_same_atoms(tmp_path):
    """Bug: a generated left-handed lattice written to CIF (lengths and angles only): the file holds
    the mirror image of the sample."""
    dm = CrystalDataModule(source="prototypes", n_prototypes=8, task="gen")
    dm.setup()
    b = collate_crystals([dm.train_set[0]], "gen")
    L = torch.tensor([[4.0, 0, 0], [0, 4.5, 0], [0, 0, -5.0]], dtype=torch.float64)
    x = {"frac": torch.tensor([[[0, 0, 0], [.3, 0, 0], [0, .25, 0], [.05, .05, .2], [.5, .5, .5]]]),
         "lattice": ((L.reshape(1, 9) - dm.lattice_mean) / dm.lattice_std).float(), "types": b["x"]["types"]}
    s = dm.to_structures(x, template=b)[0]
    assert np.linalg.det(s.lattice.matrix) > 0
    write_cif(s, tmp_path / "s.cif")
    back = structure_from_cif((tmp_path / "s.cif").read_text())
    want = Structure(Lattice(L.numpy()), s.species, x["frac"][0].double().numpy())

    def chirality(t):
        d = t.frac_coords[1:4] - t.frac_coords[0]
        return np.linalg.det(t.lattice.get_cartesian_coords(d - np.round(d)))
    assert chirality(back) == pytest.approx(chirality(want), rel=1e-4)


def test_sampling_templates_pad_to_the_largest_crystal(crystal_file):
    """Bug: templates padded to their own largest crystal: the CLI concatenates the samples of successive
    batches, which then fails for a set with several atom counts (Carbon-24: 6-24 atoms)."""
    crystal_file("carbon_24/val.csv")
    dm = CrystalDataModule(source="carbon_24", max_rows=30, task="gen", max_test=5)
    dm.setup()
    shapes = {dm.sample_template(k, generator=torch.Generator().manual_seed(k))["x"]["frac"].shape[1] for k in (1, 2, 3)}
    assert shapes == {dm.max_atoms} and dm.max_atoms == max(int(dm.train_set.num_atoms.max()),
                                                            int(dm.test_set.num_atoms.max()))

"""Every notebook runs end to end in tiny mode (WORKBENCH_TINY=1), so none can rot; after the
last cell, checks run in the notebook's own kernel on what it computed (a notebook that prints a
wrong result without raising fails here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# Run in the kernel after the notebook's cells, on its variables. Each must hold for a correct
# library whatever the (tiny) training reached.
COMMON = """
assert TINY, "the kernel did not run in tiny mode"
"""
CHECKS = {
    "quickstart.ipynb": """
assert set(results) == {"DPM-Solver++(2M)", "Heun ODE", "DDIM", "predictor-corrector"}
for name, out in results.items():
    assert out.shape == (1000, 2) and torch.isfinite(out).all(), name
assert ll.logp.shape == (64,) and torch.isfinite(ll.logp).all()
# Replacement guidance pins the observed coordinate to y exactly (the notebook prints this)
assert torch.allclose(fill[:, 0], y[:, 0], atol=1e-3), fill[:5, 0]
""",
    "crystals.ipynb": """
import math

from pymatgen.analysis.structure_matcher import StructureMatcher

# the data: Perov-5 (trained on val.csv) when its files are there, else the embedded prototypes
assert dm.source == ("perov_5" if PEROV else "prototypes") and (dm.train_split == "val" or not PEROV), dm.source
# training ran and its logged loss is finite
assert trainer.global_step > 0 and len(losses) == trainer.global_step and np.isfinite(losses).all()
# one prediction per test crystal, in order (tiny mode predicts all of them)
assert len(predicted) == len(meta) == n == len(dm.test_set), (len(predicted), len(meta), n)
assert [m["index"] for m in meta] == list(range(n)), [m["index"] for m in meta]
assert sum(s is not None for s in predicted) >= 1
# each predicted structure has exactly the composition of the test crystal it was predicted for
# (bug: meta records out of order, or a structure built against another test crystal's types)
for k, s in enumerate(predicted):
    truth = sorted(dm.test_set.numbers[k].tolist())
    assert sorted(meta[k]["atomic_numbers"]) == truth and meta[k]["formula"] == dm.test_set.formula(k), k
    assert sorted(site.specie.Z for site in reference[k]) == truth, k
    if s is not None:
        assert sorted(site.specie.Z for site in s) == truth, (k, s.composition, meta[k]["formula"])
assert list(table["formula"]) == [dm.test_set.formula(k) for k in range(len(table))]
# sampled tensors: finite; fractional coordinates in [0, 1) on real atoms and 0 on padding (bug: the
# von Mises flow's angles in [-pi, pi) not mapped back to fractions); the structures are built from them
assert set(samples) == {"frac", "lattice"} and samples["lattice"].shape == (n, 9)
assert all(torch.isfinite(v).all() for v in samples.values())
real = atom_mask.bool()
assert samples["frac"].shape[:2] == real.shape and real.sum(1).tolist() == [m["num_atoms"] for m in meta]
f = samples["frac"]
assert (f[real] >= 0).all() and (f[real] < 1).all(), (f[real].min(), f[real].max())
assert (f[~real] == 0).all()
for k, s in enumerate(predicted):
    if s is not None:
        L = (samples["lattice"][k].double() * dm.lattice_std).reshape(3, 3).numpy()
        assert abs(abs(np.linalg.det(L)) - s.volume) < 1e-6 * s.volume, k
# the CIF written parses back with pymatgen to the same structure: composition, lattice and sites
# (bug: the CIF writer drops sites or the lattice)
back = Structure.from_file(cif_file)
assert cif_structure is predicted[cif_k] and back.composition == cif_structure.composition
assert back.composition == reference[meta[cif_k]["index"]].composition
assert len(back) == len(cif_structure)
assert np.allclose(back.lattice.abc, cif_structure.lattice.abc, rtol=1e-5), (back.lattice, cif_structure.lattice)
assert np.allclose(back.lattice.angles, cif_structure.lattice.angles, atol=1e-4)
tight = StructureMatcher(ltol=1e-3, stol=1e-3, angle_tol=1e-2, primitive_cell=False, scale=False)
assert tight.fit(back, cif_structure)
assert figure_file.exists() and figure_file.stat().st_size > 0
# the metrics: finite numbers (n_matched is an int), match_rate in [0, 1], n = the number of predictions,
# an RMSE only with a match;
# the table's per-pair matches (every test crystal in tiny mode) add up to the metrics' n_matched
assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
           for v in metrics.values()), metrics
assert 0.0 <= metrics["match_rate"] <= 1.0 and metrics["n"] == n, metrics
assert metrics["n_matched"] == round(metrics["match_rate"] * n) and ("rmse" in metrics) == (metrics["n_matched"] > 0)
assert metrics.get("rmse", 0.0) >= 0.0
assert metrics["built_fraction"] == sum(s is not None for s in predicted) / n
assert len(table) == n and int(table["matched"].sum()) == metrics["n_matched"], (table["matched"].tolist(), metrics)
""",
    "graphs.ipynb": """
import math

assert list(results) == ["GDSS EM + Langevin", "DPM-Solver++ (50 steps)"] and all(len(g) == 64 for g in results.values())
# the last sample (DPM-Solver) is a symmetric adjacency, zero on the template's padded nodes, and
# each decoded graph has at most its template's nodes (isolated ones are dropped)
template = dm.sample_template(64, generator=torch.Generator().manual_seed(0))
pad = 1 - template["mask"]
adj = out["adj"]
assert torch.equal(adj, adj.transpose(1, 2)) and (adj * pad[:, :, None]).abs().max() == 0
assert all(g.number_of_nodes() <= n for g, n in zip(results["DPM-Solver++ (50 steps)"], template["mask"].sum(1)))
assert all(math.isfinite(v) for v in m.values()), m
""",
    "medical_reconstruction.ipynb": """
import math

from workbench.domains.medical.io import stack_to_volume

cases = {"ct": (ct_cfg, ct_dm, ct_truth, ct_op, ct_y, ct_recons, ct_post, ct_table, "FBP"),
         "mri": (mri_cfg, mri_dm, mri_truth, mri_op, mri_y, mri_recons, mri_post, mri_table, "zero-filled")}
for task, (cfg_, dm_, truth_, op_, y_, recons_, post_, table_, base) in cases.items():
    test_volume = dm_.test_volumes[0]
    Z, size = test_volume["stack"].shape[0], int(cfg_.datamodule.image_size)
    # the truth is the held-out test volume and y = A(truth) (noiseless)
    assert torch.equal(truth_, test_volume["stack"]) and truth_.shape == (Z, 1, size, size), (task, truth_.shape)
    assert data_residual(op_, truth_, y_) < 1e-5, task
    # every reconstruction is volume-shaped and finite; the three views have the truth's shapes
    assert list(recons_) == [base, "slice-wise diffusion (no z-TV)", "DiffusionMBIR (one sample)",
                             f"DiffusionMBIR (mean of {N_RECON})"], list(recons_)
    views = {k: v.shape for k, v in orthogonal_views(truth_).items()}
    assert views == {"axial": (size, size), "coronal": (Z, size), "sagittal": (Z, size)}, views
    for name, x in recons_.items():
        assert x.shape == truth_.shape and torch.isfinite(x).all(), (task, name)
        assert {k: v.shape for k, v in orthogonal_views(x).items()} == views, (task, name)
    # N_RECON >= 2 reconstructions; the one shown is their mean; the std is theirs, non-negative, volume-shaped
    assert N_RECON >= 2 and post_.samples.shape == (N_RECON, *truth_.shape)
    assert torch.allclose(recons_[f"DiffusionMBIR (mean of {N_RECON})"], post_.samples.mean(0))
    assert torch.equal(recons_["DiffusionMBIR (one sample)"], post_.samples[0])
    assert post_.std.shape == truth_.shape and (post_.std >= 0).all() and float(post_.std.max()) > 0, task
    assert torch.allclose(post_.std, post_.samples.std(0), atol=1e-6), task
    # the printed table: finite, and the metrics of the reconstructions it names
    assert set(table_) == set(recons_)
    for name, x in recons_.items():
        row = table_[name]
        assert all(math.isfinite(v) for v in row.values()), (task, name, row)
        assert abs(row["residual"] - data_residual(op_, x, y_)) < 1e-6, (task, name)
        again = volume_metrics(x, truth_, data_range=1.0)
        assert all(abs(row[k] - again[k]) < 1e-9 for k in again), (task, name)
    # DiffusionMBIR fits the measurements: every reconstruction's residual well below the baseline's
    for s in post_.samples:
        assert data_residual(op_, s, y_) < 0.5 * table_[base]["residual"], (task, data_residual(op_, s, y_), table_[base])
    # NIfTI: the input volume's affine, bit for bit as NIfTI-1 stores it (float32; the phantoms' affines are
    # float32-exact, so for them it is the input itself), on the mean and the std; values in physical units
    affine = np.asarray(test_volume["meta"]["affine"], dtype=np.float64).astype(np.float32).astype(np.float64)
    if cfg_.datamodule.source == "phantom":
        assert np.array_equal(affine, test_volume["meta"]["affine"]), task
    lo, hi = float(test_volume["intensity"]["lo"]), float(test_volume["intensity"]["hi"])
    mean_img, std_img = nib.load(written[task][0]), nib.load(written[task][1])
    assert np.array_equal(mean_img.affine, affine) and np.array_equal(std_img.affine, affine), (task, mean_img.affine, affine)
    assert mean_img.shape == std_img.shape == (size, size, Z), mean_img.shape
    assert np.allclose(mean_img.get_fdata(), (stack_to_volume(post_.mean).double() * (hi - lo) + lo).numpy(),
                       rtol=1e-5, atol=1e-5 * (hi - lo)), task
    std_file = std_img.get_fdata()
    assert (std_file >= 0).all() and np.allclose(std_file, (stack_to_volume(post_.std).double() * (hi - lo)).numpy(),
                                                 rtol=1e-5, atol=1e-5 * (hi - lo)), task
# CT ends every sample with the final consistency step x + A^T (y - A x) / (A^T A 1), MRI (reference) does not;
# on the non-negative CT projector that step never increases the data residual
assert ct_cfg.guidance.final_consistency and not mri_cfg.guidance.final_consistency
hook = instantiate(ct_cfg.guidance).hook(ct_op, ct_y, None)
for name in ("FBP", "slice-wise diffusion (no z-TV)"):
    x = ct_recons[name]
    assert data_residual(ct_op, hook.final_consistency(x), ct_y) <= data_residual(ct_op, x, ct_y) * (1 + 1e-5), name
""",
    "timeseries.ipynb": """
P = dm.prediction_length
assert "TSDiff-Q" in forecasts and "seasonal naive" in forecasts
for name, fc in forecasts.items():
    assert fc.samples.shape[::2] == (len(test), P) and np.isfinite(fc.samples).all(), name
    assert np.isfinite(list(fc.metrics(test).values())).all(), name
# seasonal naive repeats the last season of each context exactly
for i, s in enumerate(test):
    ctx = s.target[: len(s) - P]
    assert np.allclose(sn.samples[i, 0], ctx[len(ctx) - 24: len(ctx) - 24 + P]), i
assert syn.shape == (64, dm.context_length + P) and np.isfinite(syn).all()
""",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # a kernel spec that runs this interpreter (the project's venv), whatever is on PATH
    kdir = tmp_path / "kernels" / "python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "workbench", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert path.name in CHECKS, f"{path.name}: add its checks to CHECKS"
    nb.cells.append(nbformat.v4.new_code_cell(COMMON + CHECKS[path.name] + "print('checks passed')"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [f"cell {i}: {o['ename']}: {o['evalue']}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    last = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.output_type == "stream")
    assert "checks passed" in last

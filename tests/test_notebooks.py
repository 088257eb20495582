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

"""benchmarks/medical_reconstruction.py without measuring: its summary (z-TV gain, fast - full) and table
from a made-up result, skipped and non-finite rows, and the memory probe."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("medical_reconstruction")


def _row(method, kind, psnr, nfe=0, finite=True):
    r = {"method": method, "kind": kind, "nfe_per_slice": nfe, "seconds": 1.0, "peak_rss_mb": 500.0,
         "peak_rss_increase_mb": 0.0, "finite": finite}
    if finite:
        r.update({f"psnr_{v}": p for v, p in zip(bench.VIEWS, psnr)})
        r.update({f"ssim_{v}": 0.5 for v in bench.VIEWS})
        r["data_residual"] = 0.01
    return r


def test_summary_and_table() -> None:
    """Bug: a difference taken against the wrong row (slice-wise for the z-TV gain, the reference-length
    PC row for the fast mode), the sign flipped, or a non-finite row used."""
    rows = [_row("fbp", "analytic", (10, 11, 12)), _row("slice-wise", "slice-wise", (30, 20, 21), 401),
            _row("diffusionmbir (PC 200)", "full", (30, 23, 25), 401),
            _row("diffusionmbir all-axes TV (PC 200)", "all-axes", (31, 23.5, 24), 401),
            _row("diffusionmbir (PC 2000, reference length)", "reference", (35, 33, 32), 4001),
            _row("diffusionmbir-fast (DDIM eta 0.3 199, 8 ADMM/step)", "fast", (34.6, 33.1, 31), 200),
            _row("dps", "dps", (0, 0, 0), 401, finite=False)]
    tasks = [{"task": "sv_ct_8", "rows": rows}, {"task": "cs_mri_x4", "skipped": "no MNI file"},
             {"task": "sv_ct_8_64", "rows": [_row("fbp", "analytic", (10, 11, 12)),
                                              _row("diffusionmbir (PC 200)", "full", (30, 23, 25), 401)]}]
    summary = bench.summarise(tasks)
    assert summary["sv_ct_8"] == {"z_tv_gain": [0, 3, 4], "all_axes_minus_z": [1, 0.5, -1],
                                  "fast_minus_reference": [-0.4, 0.1, -1.0], "fast_minus_full": [4.6, 10.1, 6.0]}
    assert summary["sv_ct_8_64"] == {"z_tv_gain": None, "all_axes_minus_z": None, "fast_minus_reference": None,
                                     "fast_minus_full": None}
    result = {"settings": {"epochs": 1}, "priors": {"ct": {"what": "x", "train_seconds": 1.0}}, "tasks": tasks,
              "summary": summary}
    text = bench.table(result)
    assert "| cs_mri_x4 | skipped: no MNI file |" in text and "| sv_ct_8 | dps | non-finite |" in text
    assert "| sv_ct_8 | +0.00 / +3.00 / +4.00 | +1.00 / +0.50 / -1.00 | -0.40 / +0.10 / -1.00 | +4.60 / +10.10 / +6.00 |" in text
    assert text.endswith(bench.meta_line(result))


def test_update_keeps_the_other_tasks(tmp_path) -> None:
    """Bug: ``--update`` dropping the stored tasks not re-run, or keeping a stale copy of a re-run one."""
    old = {"tasks": [{"task": "a", "rows": [], "run": 1}, {"task": "b", "rows": [], "run": 1}], "priors": {"ct": {"epochs": 1}}}
    new = {"tasks": [{"task": "b", "rows": [], "run": 2}, {"task": "c", "rows": [], "run": 2}], "priors": {"mri": {"epochs": 2}}}
    merged = bench.merge_results(old, new)
    assert [(t["task"], t["run"]) for t in merged["tasks"]] == [("a", 1), ("b", 2), ("c", 2)]
    assert merged["priors"] == {"ct": {"epochs": 1}, "mri": {"epochs": 2}}

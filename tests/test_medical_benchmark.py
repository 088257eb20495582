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
    rows = [_row("fbp", "analytic", (10, 11, 12)), _row("slice-wise", "slice-wise", (30, 20, 21), 401),
            _row("diffusionmbir (PC 200)", "full", (30, 23, 25), 401),
            _row("diffusionmbir-fast (DPM-Solver++ 50)", "fast", (29.6, 23.1, 24), 51),
            _row("dps", "slice-wise", (0, 0, 0), 401, finite=False)]
    tasks = [{"task": "sv_ct_8", "rows": rows}, {"task": "cs_mri_x4", "skipped": "no MNI file"}]
    summary = bench.summarise(tasks)
    assert summary == {"sv_ct_8": {"z_tv_gain_cor_sag": [3, 4],
                                   "fast_minus_full": {"diffusionmbir-fast (DPM-Solver++ 50)": [-0.4, 0.1, -1.0]}}}
    result = {"settings": {"epochs": 1}, "priors": {"ct": {"what": "x", "train_seconds": 1.0}}, "tasks": tasks,
              "summary": summary}
    text = bench.table(result)
    assert "| cs_mri_x4 | skipped: no MNI file |" in text and "| sv_ct_8 | dps | non-finite |" in text
    assert "+3.00 / +4.00" in text and "DPM-Solver++ 50: -0.40 / +0.10 / -1.00" in text
    assert text.endswith(bench.meta_line(result))

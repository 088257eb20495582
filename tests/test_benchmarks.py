"""A benchmark run measures: stored rows are not reused unless asked, and then only with the same
settings; every measured row records when, with which settings and on what machine (issue 12).
The expensive parts (training, sampling) are mocked; nothing is measured for real."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
graphs = importlib.import_module("graphs")

STORED = {"steps": 5, "seed": 0, "nfe_per_network": 10, "seconds_128": 99.0,
          "at20": [{"degree_mmd": 9.0, "clustering_mmd": 9.0, "orbit_mmd": 9.0}],
          "at128": {"degree_mmd": 9.0, "clustering_mmd": 9.0, "orbit_mmd": 9.0}}


class _DM:
    def reference(self):
        return list(range(20))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    out = tmp_path / "graphs.json"
    out.write_text(json.dumps({"community_small_seeds": {"epochs": 5000, "rows": {"5/0": STORED},
                                                          "timing": {"threads": 2, "5": 99.0}}}))
    monkeypatch.setattr(graphs, "OUT", out)
    monkeypatch.setattr(graphs, "_train_and_load", lambda *a, **k: (1.0, _DM(), object(), None))
    calls = []

    def row(module, dm, ref, steps, seed):
        calls.append((steps, seed))
        return {**STORED, "steps": steps, "seed": seed, "seconds_128": 1.0,
                "at20": [{"degree_mmd": 0.1, "clustering_mmd": 0.1, "orbit_mmd": 0.1}],
                "at128": {"degree_mmd": 0.1, "clustering_mmd": 0.1, "orbit_mmd": 0.1}}

    monkeypatch.setattr(graphs, "_seed_row", row)
    monkeypatch.setattr(graphs, "_draw", lambda *a, **k: (None, 2.5, 10))
    return out, calls, tmp_path / "run"


def test_seeds_measures_rows_already_stored(fake) -> None:
    out, calls, run = fake
    entry = graphs.community_seeds(150, run, [5], [0], skip_training=True)
    assert calls == [(5, 0)], "the stored row was reused instead of measured"
    row = json.loads(out.read_text())["community_small_seeds"]["rows"]["5/0"]
    assert row["seconds_128"] == 1.0 and entry["summary"][5]["degree_mmd@128"][0] == 0.1
    meta = row["meta"]
    assert meta["settings"] == {"epochs": 150, "run_dir": str(run.absolute()), "steps": 5, "seed": 0}
    assert meta["measured_at"].endswith("+00:00") and meta["machine"]["torch_threads"] >= 1
    assert meta["machine"]["cpu"] and meta["machine"]["torch"]
    assert "timing" not in entry, "timings of another model were kept"


def test_reuse_needs_the_flag_and_matching_settings(fake) -> None:
    out, calls, run = fake
    graphs.community_seeds(150, run, [5], [0], skip_training=True)
    graphs.community_seeds(150, run, [5], [0], skip_training=True, reuse=True)
    assert calls == [(5, 0)], "--reuse with the same settings measures again"
    graphs.community_seeds(300, run, [5], [0], skip_training=True, reuse=True)
    assert calls == [(5, 0), (5, 0)], "--reuse kept a row recorded with other settings (epochs)"
    graphs.community_seeds(300, run, [5], [0], skip_training=True)
    assert len(calls) == 3


def test_timing_measures_and_records(fake) -> None:
    out, calls, run = fake
    timing = graphs.community_timing(150, run, [5])["timing"]
    assert timing["5"] == 2.5, "the stored timing was reused instead of measured"
    assert timing["meta"]["5"]["settings"]["epochs"] == 150
    assert graphs.community_timing(150, run, [5], reuse=True)["timing"]["meta"] == timing["meta"]


def test_rows_before_metadata_are_never_reused() -> None:
    meta = importlib.import_module("_meta")
    assert meta.reused({"a": {"x": 1}}, "a", {}, reuse=True) is None
    assert meta.meta_line({}) == f"*Measured: {meta.NO_META}.*"

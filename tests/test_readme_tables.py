"""Every generated benchmark table in the READMEs equals its rendering from the committed
benchmarks/results/*.json (issue 12): no measuring, the scripts' render functions only."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_meta = importlib.import_module("_meta")


def _cases():
    graphs, ts, samplers = (importlib.import_module(m) for m in ("graphs", "timeseries", "samplers"))
    gdata, tdata = json.loads(graphs.OUT.read_text()), json.loads(ts.OUT.read_text())
    out = {}
    for name, (fn, key) in graphs.TABLES.items():
        out[(graphs.README, name)] = lambda fn=fn: fn(gdata)
    for name, (fn, key) in ts.TABLES.items():
        out[(ts.README, name)] = lambda fn=fn: fn(tdata)
    for mod in (samplers, importlib.import_module("bayesflow")):
        for name, (fn, file) in mod.TABLES.items():
            out[(ROOT / "README.md", name)] = lambda fn=fn, file=file: fn(
                json.loads((ROOT / "benchmarks" / "results" / file).read_text()))
    medical = importlib.import_module("medical_reconstruction")
    for name, (fn, file) in medical.TABLES.items():
        out[(medical.README, name)] = lambda fn=fn, file=file: fn(
            json.loads((ROOT / "benchmarks" / "results" / file).read_text()))
    crystals = importlib.import_module("crystals")
    for name, (fn, file) in crystals.TABLES.items():
        out[(crystals.README, name)] = lambda fn=fn, file=file: fn(
            json.loads((ROOT / "benchmarks" / "results" / file).read_text()))
    return out


CASES = _cases()
READMES = [ROOT / "README.md", ROOT / "domains" / "graphs" / "README.md", ROOT / "domains" / "timeseries" / "README.md",
           ROOT / "domains" / "medical" / "README.md", ROOT / "domains" / "crystals" / "README.md"]


def test_every_marked_table_has_a_renderer() -> None:
    marked = {(p, name) for p in READMES for name in _meta.blocks(p)}
    assert marked == set(CASES), f"blocks without renderer: {marked - set(CASES)}; missing: {set(CASES) - marked}"


@pytest.mark.parametrize("key", list(CASES), ids=[n for _, n in CASES])
def test_readme_table_equals_its_rendering_from_json(key) -> None:
    path, name = key
    assert _meta.read_block(path, name) == CASES[key](), (
        f"{path.relative_to(ROOT)} block {name} is not its rendering from the JSON; re-render it with the "
        "benchmark script's table mode (--readme)")

"""workbench.state exports only what the project uses (dead helpers are removed, not kept)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

import workbench.state as state

ROOT = Path(__file__).resolve().parents[2]


def _sources() -> str:
    files = [p for d in ("workbench", "domains", "benchmarks", "notebooks") for p in (ROOT / d).rglob("*")
             if p.suffix in (".py", ".ipynb") and p != ROOT / "workbench" / "state.py"]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_every_export_is_used_outside_the_module() -> None:
    """Each name in ``__all__`` is imported from the state module (``from .state import ...``,
    ``from workbench.state import (...)``) or used as ``state.<name>`` somewhere else."""
    text = _sources()
    imported: set[str] = set()
    for m in re.finditer(r"from\s+(?:\.+|workbench\.)state\s+import\s+(\([^)]*\)|[^\n]*)", text):
        imported |= {n.split(" as ")[0].strip() for n in m.group(1).strip("()").split(",") if n.strip()}
    imported |= set(re.findall(r"\bstate\.(\w+)", text))
    unused = [name for name in state.__all__ if name not in imported]
    assert not unused, f"workbench.state exports {unused} that nothing uses"


def test_cat_and_tree_map_on_dict_states() -> None:
    a = {"x": torch.zeros(2, 3), "adj": torch.zeros(2, 3, 3)}
    b = {"x": torch.ones(1, 3), "adj": torch.ones(1, 3, 3)}
    c = state.cat([a, b])
    assert state.batch_size(c) == 3 and c["adj"].shape == (3, 3, 3) and c["x"][2].eq(1).all()
    assert state.keys_of(c) == ["x", "adj"] and state.keys_of(c["x"]) == [None]
    assert state.tree_map(lambda u, v: u + v, a, a)["x"].shape == (2, 3)

"""The explicit package list in pyproject.toml covers every package of the source tree: an editable
install imports anything, so a package missing from the list only breaks a user's `pip install .`
(workbench.bayesflow was missing once)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top, src in (("workbench", ROOT / "workbench"), ("workbench.domains", ROOT / "domains")):
        for init in src.rglob("__init__.py"):
            rel = init.parent.relative_to(src).parts
            found.add(".".join((top, *rel)))
    missing = sorted(found - listed)
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {missing}"

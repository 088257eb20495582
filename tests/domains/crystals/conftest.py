"""Data files of the crystals tests: found under $WORKBENCH_DATA/crystals (workbench.data.data_root);
a test needing an absent file is skipped and says which file and where it looked."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pymatgen", reason="the crystals domain needs pymatgen (pip install 'workbench[crystals]')")


@pytest.fixture
def crystal_file():
    from workbench.data import data_root

    def find(name: str) -> Path:
        p = data_root() / "crystals" / name
        if not p.exists():
            pytest.skip(f"{name} not found at {p} (set WORKBENCH_DATA to the folder holding crystals/{name})")
        return p

    return find


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test parses into its own cache folder (never the user's)."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))

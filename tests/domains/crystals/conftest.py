"""Data files of the crystals tests: found under $WORKBENCH_DATA/crystals (workbench.data.data_root);
a test needing an absent file is skipped and says which file and where it looked."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def crystal_file():
    from workbench.data import data_root

    def find(name: str) -> Path:
        p = data_root() / "crystals" / name
        if not p.exists():
            pytest.skip(f"{name} not found at {p} (set WORKBENCH_DATA to the folder holding crystals/{name})")
        return p

    return find


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Parse into the test's own cache folder (never the user's); used by test_data.py."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))

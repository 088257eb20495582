"""Data files of the medical tests: found under $WORKBENCH_DATA/medical (workbench.data.data_root);
a test needing an absent file is skipped and says which file and where it looked."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def medical_file():
    from workbench.data import data_root

    def find(name: str) -> Path:
        p = data_root() / "medical" / name
        if not p.exists():
            pytest.skip(f"{name} not found at {p} (set WORKBENCH_DATA to the folder holding medical/{name})")
        return p

    return find

"""Data files of the crystals tests: found under $WORKBENCH_DATA/crystals (workbench.data.data_root);
a test needing an absent file is skipped and says which file and where it looked."""
from __future__ import annotations

from functools import partial

import pytest

from tests.conftest import data_file


@pytest.fixture
def crystal_file():
    return partial(data_file, "crystals")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Parse into the test's own cache folder (never the user's); used by test_data.py."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))

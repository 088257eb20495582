"""Data files of the medical tests: found under $WORKBENCH_DATA/medical (workbench.data.data_root);
a test needing an absent file is skipped and says which file and where it looked."""
from __future__ import annotations

from functools import partial

import pytest

from tests.conftest import data_file


@pytest.fixture
def medical_file():
    return partial(data_file, "medical")

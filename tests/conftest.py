"""Shared fixtures: CPU only, few threads, seeded."""
from __future__ import annotations

import os

import pytest
import torch

# one torch thread per pytest-xdist worker (two workers of two threads oversubscribe 2 cores: 1.6x slower)
# and the CLI's own choice (workbench.cli.choose_threads) and subprocesses follow OMP_NUM_THREADS
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("WORKBENCH_TINY", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gaussian2d() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and a correlated covariance of a 2-D Gaussian."""
    mean = torch.tensor([1.0, -2.0])
    chol = torch.tensor([[1.0, 0.0], [0.6, 0.5]])
    return mean, chol @ chol.T


def data_file(folder: str, name: str):
    """``$WORKBENCH_DATA/<folder>/<name>`` (workbench.data.data_root), or skip the test saying which file
    and where it looked (the domains' data-file fixtures)."""
    from pathlib import Path

    from workbench.data import data_root

    p = Path(data_root()) / folder / name
    if not p.exists():
        pytest.skip(f"{name} not found at {p} (set WORKBENCH_DATA to the folder holding {folder}/{name})")
    return p

"""Shared fixtures: CPU only, few threads, seeded."""
from __future__ import annotations

import os

import pytest
import torch

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

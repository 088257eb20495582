"""Generic sample-quality metrics used by the core's toy and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "moment_errors"]


def _quantiles(v: Tensor, n: int) -> Tensor:
    """Empirical quantile function of each column of ``v`` [m, P] at n mid-points -> [n, P]."""
    q = (torch.arange(n, dtype=v.dtype, device=v.device) + 0.5) / n
    return torch.quantile(v, q, dim=0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between point clouds ``x [n, d]`` and ``y [m, d]``.

    SW_p = (E_theta W_p^p(theta^T x, theta^T y))^(1/p) over uniform directions theta on the sphere
    (Bonneel et al. 2015); 1-D distances via matched empirical quantiles, so n and m may differ.
    Deterministic for a given ``seed``.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need [n, d] and [m, d] point clouds, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double().cpu(), y.double().cpu()
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(x.shape[0], y.shape[0])
    qx, qy = _quantiles(x @ theta, n), _quantiles(y @ theta, n)
    return float(((qx - qy).abs() ** p).mean() ** (1.0 / p))


def moment_errors(x: Tensor, y: Tensor) -> dict[str, float]:
    """Max-abs error of the mean and of the covariance of ``x`` against ``y`` (both [n, d])."""
    x, y = x.double().cpu(), y.double().cpu()
    return {
        "mean_error": float((x.mean(0) - y.mean(0)).abs().max()),
        "cov_error": float((torch.cov(x.T) - torch.cov(y.T)).abs().max()),
    }

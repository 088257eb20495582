"""The per-step hook ``post_step(x, t_next, prediction) -> x`` of every sampler (issue 13, point 2).

With a linear operator A, an observation y = A x_true and the exact Gaussian denoiser, a hook that
projects onto {x : A x = y} makes every sampler return samples with A x = y to float precision
(including the noise-free means of EM / PC / S4 and the final denoised estimate, a new network
prediction); without it they do not. ``post_step=None`` and an identity hook change nothing.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from workbench.geometry import Euclidean
from workbench.guidance.self_guidance import sample_self_guided_ddpm
from workbench.processes import VP, DiscreteDDPM
from workbench.samplers import (sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc,
                                sample_s4)
from workbench.testing import GaussianDenoiser

D, M, B, STEPS = 5, 2, 64, 8


def _zero_energy(x0: torch.Tensor) -> torch.Tensor:
    return (0.0 * x0).sum(dim=1)


# name -> (sampler, kwargs, process factory)
SAMPLERS: dict[str, tuple[Callable[..., Any], dict, Callable[[], Any]]] = {
    "euler_maruyama": (sample_euler_maruyama, {}, VP),
    "pc": (sample_pc, {"snr": 0.05}, VP),
    "pc_ancestral_corrector_first": (sample_pc, {"snr": 0.05, "predictor": "ancestral", "corrector_first": True}, VP),
    "pc_no_corrector": (sample_pc, {"predictor": "euler_maruyama", "corrector": "none"}, VP),
    "ode_euler": (sample_ode, {"method": "euler"}, VP),
    "ode_heun": (sample_ode, {"method": "heun"}, VP),
    "ddim": (sample_ddim, {}, VP),
    "ddpm_ancestral": (sample_ddim, {"eta": 1.0}, VP),
    "dpm_solver": (sample_dpm_solver, {}, VP),
    "dpm_solver_2m_final": (sample_dpm_solver, {"lower_order_final": False}, VP),
    "s4": (sample_s4, {"snr": 0.05}, VP),
    "self_guided_ddpm": (sample_self_guided_ddpm, {"energy": _zero_energy, "scale": 1.0}, lambda: DiscreteDDPM(100)),
}


@pytest.fixture(scope="module")
def problem() -> dict[str, Any]:
    g = torch.Generator().manual_seed(13)
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    root = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = root @ root.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    a = torch.randn(M, D, generator=g, dtype=torch.float64)
    x_true = mean + torch.linalg.cholesky(cov) @ torch.randn(D, generator=g, dtype=torch.float64)
    y = a @ x_true
    pinv = a.T @ torch.linalg.inv(a @ a.T)                     # A^T (A A^T)^{-1}  [D, M]

    def project(x: torch.Tensor, t: torch.Tensor, prediction: Any) -> torch.Tensor:
        return x - (x @ a.T - y) @ pinv.T

    return {"mean": mean, "cov": cov, "a": a, "y": y, "project": project}


def _run(name: str, problem: dict, *, denoise: bool, seed: int = 0, **hook: Any) -> torch.Tensor:
    fn, kwargs, make = SAMPLERS[name]
    process = make()
    model = GaussianDenoiser(process, problem["mean"], problem["cov"])
    g = torch.Generator().manual_seed(seed)
    x = process.prior_sample(torch.zeros(B, D, dtype=torch.float64), Euclidean(), generator=g)
    out = fn(model, x, process.time_grid(STEPS), process=process, geometry=Euclidean(), generator=g,
             denoise=denoise, **kwargs, **hook)
    assert out.dtype == torch.float64 and out.shape == (B, D)
    return out


def _residual(out: torch.Tensor, problem: dict) -> float:
    return (out @ problem["a"].T - problem["y"]).abs().max().item()


@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_projection_hook_enforces_constraint(name: str, denoise: bool, problem: dict) -> None:
    out = _run(name, problem, denoise=denoise, post_step=problem["project"])
    assert torch.isfinite(out).all()
    assert _residual(out, problem) < 1e-8
    # without the hook the samples are far from the constraint set
    assert _residual(_run(name, problem, denoise=denoise), problem) > 1e-2


@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_no_hook_changes_nothing(name: str, denoise: bool, problem: dict) -> None:
    ref = _run(name, problem, denoise=denoise)
    assert torch.equal(_run(name, problem, denoise=denoise, post_step=None), ref)
    assert torch.equal(_run(name, problem, denoise=denoise, post_step=lambda x, t, p: x), ref)


@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize("name", ["ddim", "euler_maruyama", "s4"])
def test_hook_sees_next_time_and_prediction(name: str, denoise: bool, problem: dict) -> None:
    """One call per step at t_next with the step's prediction; one more on the returned mean
    (samplers that keep one) and on the denoised estimate."""
    calls: list[tuple[float, Any]] = []

    def hook(x: torch.Tensor, t: torch.Tensor, prediction: Any) -> torch.Tensor:
        calls.append((float(t), prediction))
        return x

    _run(name, problem, denoise=denoise, post_step=hook)
    ts = SAMPLERS[name][2]().time_grid(STEPS).tolist()
    expected = ts[1:] + ([ts[-1]] if name != "ddim" else []) + ([ts[-1]] if denoise else [])
    assert [c[0] for c in calls] == pytest.approx(expected)
    assert all(hasattr(p, "x0") and p.x0.shape == (B, D) for _, p in calls)

"""Tools for testing samplers, processes and domain adapters.

* :class:`GaussianDenoiser`: the exact denoiser of Gaussian data N(mu, Sigma), so every
  sampler can be checked against a known answer without training.
* :func:`check_adapter`: the conformance test every domain adapter must pass.
* :func:`crash_and_resume`: train a config uninterrupted and again with a crash and a resume;
  :func:`assert_same_training` checks that the two ended bit-identical (weights, EMA, step).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .data import call_with_meta
from .geometry import Geometry
from .precond import Prediction
from .processes.base import Process
from .state import State, batch_size, keys_of, tree_map

__all__ = ["GaussianDenoiser", "gaussian_logpdf", "check_adapter", "CrashAfter", "SimulatedCrash", "WeightsDigest",
           "crash_and_resume", "assert_same_training"]


class GaussianDenoiser(nn.Module):
    """Exact E[x0 | x_t] for x0 ~ N(mu, Sigma) in R^d under x_t = A x0 + S eps.

    E[x0 | x_t] = mu + Sigma A (A Sigma A + S^2)^{-1} (x_t - A mu), with A = diag(alpha) and
    S = diag(sigma) per element: one alpha and sigma per sample, or per element under per-element
    noise schedules (:class:`~workbench.processes.PerChannelProcess`).
    """

    def __init__(self, process: Process, mean: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.process = process
        self.register_buffer("mean", mean.double())
        self.register_buffer("cov", cov.double())

    def forward(self, x: Tensor, t: Tensor | float, geometry: Geometry, **extras: Any) -> Prediction:
        t = self.process._batch_t(t, x)
        coef = self.process.at(t, x, geometry)
        a = coef.alpha.double().expand(x.shape).flatten(1)                          # [B, d]
        s = coef.sigma.double().expand(x.shape).flatten(1)
        xf = x.double().flatten(1)
        m = a[:, :, None] * self.cov * a[:, None, :] + torch.diag_embed(s * s)      # [B, d, d]
        r = xf - a * self.mean
        # m is SPD: Cholesky, not LU (batched LU solves of 256x256 systems tripped an MKL pivot error,
        # "DLASWP parameter 6", under 2 torch threads)
        chol = torch.linalg.cholesky(m)
        sol = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)            # [B, d]
        x0 = self.mean + (a * sol) @ self.cov.T
        eps = (xf - a * x0) / s
        return Prediction(x0.reshape(x.shape).to(x.dtype), eps.reshape(x.shape).to(x.dtype), coef)


def gaussian_logpdf(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mean, cov) per row of ``x``."""
    dist = torch.distributions.MultivariateNormal(mean.double(), covariance_matrix=cov.double())
    return dist.log_prob(x.double())


def check_adapter(adapter: Any, *, samplers: dict[str, Callable] | None = None, steps: int = 3,
                  batch: int = 4) -> dict[str, Any]:
    """Conformance checks for a :class:`workbench.adapter.DomainAdapter`.

    Checks that: the datamodule yields batches with a State under ``"x"``; the geometry's
    noise, projection, broadcasting and reduction respect the state structure and masks
    (projection is idempotent, noise vanishes on padded entries, reduction gives ``[B]``);
    the network keeps the structure; the loss is finite per sample and back-propagates to
    every trainable parameter group; every sampler runs a few steps and returns a finite
    state of the right structure; the metrics return a dict of floats.
    Raises AssertionError with a message naming the failing point. Returns a summary.

    The checks draw from torch's global generator seeded with 0 inside ``torch.random.fork_rng``,
    so they are reproducible and the caller's RNG state is the same afterwards.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _check_adapter(adapter, samplers=samplers, steps=steps, batch=batch)


def _check_adapter(adapter: Any, *, samplers: dict[str, Callable] | None, steps: int, batch: int) -> dict[str, Any]:
    from .lit import DiffusionModule  # local: lit imports lightning
    from .samplers import sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc, sample_s4

    dm = adapter.datamodule
    dm.prepare_data()
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert isinstance(b, dict) and "x" in b, "batches must be dicts with the State under 'x'"
    x = b["x"]
    geometry = adapter.geometry.bind(b.get("mask"))
    n = batch_size(x)
    if getattr(adapter, "method", None) is not None:
        # another method (a Bayesian flow network, a user's own): its own state handling, loss and
        # sampler; the diffusion geometry's noise contract does not apply (discrete states)
        module = adapter.module()
        module.train()
        return _check_method(adapter, module, b, n, steps=steps, batch=batch)

    # geometry contract
    z = geometry.randn_like(x)
    assert keys_of(z) == keys_of(x), "randn_like changed the state structure"
    p = geometry.project(x)
    pp = geometry.project(p)
    tz = geometry.project_tangent(z)
    for k in keys_of(x):
        a, c = (tz, geometry.project_tangent(tz)) if k is None else (tz[k], geometry.project_tangent(tz)[k])
        assert torch.allclose(a, c, atol=1e-5), f"project_tangent is not idempotent on {k or 'x'}"
    for k in keys_of(x):
        a, c = (p, pp) if k is None else (p[k], pp[k])
        assert torch.allclose(a, c, atol=1e-5), f"project is not idempotent on {k or 'x'}"
    red = geometry.reduce(tree_map(lambda v: v * v, z))
    assert red.shape == (n,), f"reduce must give [B]={n}, got {tuple(red.shape)}"
    assert torch.isfinite(red).all(), "reduce gave non-finite values"
    e = geometry.expand(torch.rand(n), x)
    assert keys_of(e) == keys_of(x), "expand changed the state structure"
    if b.get("mask") is not None:
        zero = tree_map(lambda v: torch.zeros_like(v), x)
        ones = tree_map(lambda v: torch.ones_like(v), x)
        masked = geometry.project_tangent(ones)
        zp = geometry.project_tangent(z)
        for k in keys_of(x):
            m = masked if k is None else masked[k]
            zz = z if k is None else z[k]
            zpk = zp if k is None else zp[k]
            assert torch.allclose(zz * (1 - m.abs().clamp(max=1)), (zero if k is None else zero[k])), \
                f"noise is not zero on padded entries of {k or 'x'}"
            assert torch.allclose(zpk, zz, atol=1e-5), f"noise is not on the constraint set for {k or 'x'}"

    # network + loss + backward, through the LightningModule
    module = adapter.module() if hasattr(adapter, "module") else DiffusionModule(
        network=adapter.network, process=adapter.process, geometry=adapter.geometry)
    module.train()
    out = module.loss_fn(module.denoiser, x, geometry=geometry, extras=module._extras(b))
    assert out.loss.shape == (n,), f"loss must be per sample [B]={n}, got {tuple(out.loss.shape)}"
    assert torch.isfinite(out.loss).all(), "loss is not finite"
    out.loss.mean().backward()
    grads = [q.grad for q in module.parameters() if q.requires_grad]
    assert grads and all(g is not None for g in grads), "some trainable parameters get no gradient"

    # every sampler on the untrained model
    samplers = samplers or {
        "euler_maruyama": sample_euler_maruyama, "pc": sample_pc, "ode": sample_ode,
        "ddim": sample_ddim, "dpm_solver": sample_dpm_solver, "s4": sample_s4,
    }
    module.eval()
    template = dm.sample_template(batch)
    meta = template.pop("meta", None) if isinstance(template, dict) else None
    results = {}
    for name, fn in samplers.items():
        if name in ("euler_maruyama", "pc", "s4") and not module.process.stochastic:
            continue
        s = module.sample(template, sampler=fn, steps=steps)
        for k in keys_of(s):
            v = s if k is None else s[k]
            assert torch.isfinite(v).all(), f"sampler {name} gave non-finite values in {k or 'x'}"
        assert keys_of(s) == keys_of(x), f"sampler {name} changed the state structure"
        results[name] = s
    metrics = call_with_meta(adapter.metrics, next(iter(results.values())), dm.reference(), meta=meta)
    assert isinstance(metrics, dict) and all(isinstance(v, float) for v in metrics.values()), \
        "metrics must be a dict of floats"
    return {"loss": float(out.loss.mean()), "samplers": sorted(results), "metrics": metrics}




def _check_method(adapter: Any, module: Any, b: dict, n: int, *, steps: int, batch: int) -> dict[str, Any]:
    """The loss / gradient / sampling / metrics part of the conformance check for a non-diffusion
    method: its own loss and its own sampler."""
    x = b["x"]
    out = module.method.loss(b, torch.Generator().manual_seed(0))
    assert out.loss.shape == (n,), f"loss must be per sample [B]={n}, got {tuple(out.loss.shape)}"
    assert torch.isfinite(out.loss).all(), "loss is not finite"
    out.loss.mean().backward()
    grads = [q.grad for q in module.parameters() if q.requires_grad]
    assert grads and all(g is not None for g in grads), "some trainable parameters get no gradient"
    module.eval()
    template = adapter.datamodule.sample_template(batch)
    meta = template.pop("meta", None) if isinstance(template, dict) else None
    s = module.sample(template, steps=steps, generator=torch.Generator().manual_seed(0))
    assert keys_of(s) == keys_of(x), "the method's sampler changed the state structure"
    for k in keys_of(s):
        v = s if k is None else s[k]
        ref = template["x"] if k is None else template["x"][k]
        assert v.shape == ref.shape, f"sample {k or 'x'} has shape {tuple(v.shape)}, the template {tuple(ref.shape)}"
        assert torch.isfinite(v.double()).all(), f"the method's sampler gave non-finite values in {k or 'x'}"
    metrics = call_with_meta(adapter.metrics, s, adapter.datamodule.reference(), meta=meta)
    assert isinstance(metrics, dict) and all(isinstance(v, float) for v in metrics.values()), \
        "metrics must be a dict of floats"
    return {"loss": float(out.loss.detach().mean()), "samplers": ["method"], "metrics": metrics}


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAfter` to simulate a run killed mid-training."""


class CrashAfter:
    """Lightning callback that raises :class:`SimulatedCrash` after ``step`` optimiser steps."""

    def __new__(cls, step: int):  # built lazily so importing this module does not import Lightning
        import pytorch_lightning as pl

        class _Crash(pl.Callback):
            def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
                if trainer.global_step >= step:
                    raise SimulatedCrash(f"simulated crash after step {trainer.global_step}")

        return _Crash()


def _final_checkpoint(run_dir: Any) -> dict[str, Any]:
    from pathlib import Path

    from .lit import load_checkpoint

    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / "last.ckpt")
    return {"weights": ckpt["state_dict"], "ema": ckpt.get("callbacks", {}).get("EMA", {}).get("shadow", {}),
            "step": ckpt["global_step"], "epoch": ckpt["epoch"]}


def crash_and_resume(overrides: list[str], directory: Any, *, crash_step: int) -> dict[str, dict[str, Any]]:
    """Train the config of ``overrides`` three ways under ``directory``: uninterrupted (``full``),
    crashed by :class:`CrashAfter` after ``crash_step`` optimiser steps (``crashed``: the last
    checkpoint before the crash), and resumed from that checkpoint to the end (``resumed``). Returns
    each run's last checkpoint as ``{"weights", "ema", "step", "epoch"}``. The CLI's
    ``WORKBENCH_RUN_DIR`` is restored after each run; the overrides must leave resuming on (no
    ``resume=false``)."""
    import os
    from pathlib import Path

    from .cli import compose_config, train

    if "resume=false" in overrides:
        raise ValueError("crash_and_resume needs the CLI's resume; drop resume=false from the overrides")
    directory = Path(directory)
    saved = os.environ.get("WORKBENCH_RUN_DIR")

    def run(run_dir: Path, extra: list[str]) -> None:
        try:
            train(compose_config([*overrides, f"run_dir={run_dir}", *extra]))
        finally:
            if saved is None:
                os.environ.pop("WORKBENCH_RUN_DIR", None)
            else:
                os.environ["WORKBENCH_RUN_DIR"] = saved

    run(directory / "full", [])
    crash = ["+callbacks.crash._target_=workbench.testing.CrashAfter", f"+callbacks.crash.step={int(crash_step)}"]
    try:
        run(directory / "crashed", crash)
    except SimulatedCrash:
        pass
    else:
        raise AssertionError(f"the run did not reach step {crash_step}, so it never crashed; lower crash_step")
    crashed = _final_checkpoint(directory / "crashed")
    run(directory / "crashed", [])          # resumes from the crashed run's last.ckpt
    return {"full": _final_checkpoint(directory / "full"), "crashed": crashed,
            "resumed": _final_checkpoint(directory / "crashed")}


def assert_same_training(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two final checkpoints of :func:`crash_and_resume` are bit-identical: step, every weight and
    every EMA shadow tensor (each difference is named)."""
    assert a["step"] == b["step"], f"steps differ: {a['step']} vs {b['step']}"
    assert a["weights"].keys() == b["weights"].keys(), "the checkpoints hold different weights"
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), f"weights differ at {k}"
    assert a["ema"].keys() == b["ema"].keys(), "the checkpoints hold different EMA tensors"
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), f"EMA differs at {k}"


class WeightsDigest:
    """Lightning callback writing ``<dir>/weights-rank<r>.txt``: a digest of the final weights per rank."""

    def __new__(cls, directory: str):
        import hashlib
        import os

        import pytorch_lightning as pl

        class _Digest(pl.Callback):
            def on_train_end(self, trainer: Any, pl_module: Any) -> None:
                h = hashlib.sha256()
                for k, v in sorted(pl_module.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, f"weights-rank{trainer.global_rank}.txt"), "w") as f:
                    f.write(h.hexdigest())

        return _Digest()

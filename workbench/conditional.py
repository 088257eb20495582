"""Conditional and inverse sampling over a test set: the generic loop behind
``workbench evaluate guidance=...`` (and ``workbench sample guidance=...``).

For each batch of (observation, ground truth) pairs from ``datamodule.observations(n,
batch_size)``, the guidance factory builds the guided denoiser from the batch's observation
(``guidance(denoiser, batch, generator) -> denoiser``, :mod:`workbench.guidance.factory`), and
the module's sampler draws ``posterior_samples`` samples per observation with it (passing the
result's ``post_step``, if it has one, to the sampler). The posterior mean and per-element
standard deviation are scored by ``datamodule.conditional_metrics(mean, truth, samples)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

from .errors import ConfigError, RunFailed
from .state import State, cat, to_device, tree_map

__all__ = ["Posterior", "posterior_samples", "run", "default_metrics", "template_of"]

#: ``guidance(denoiser, batch, generator=None) -> denoiser``
GuidanceFn = Callable[..., Any]

_NOT_STATE = ("observation", "meta")


@dataclass
class Posterior:
    """Posterior samples of ``n`` observations: ``samples [S, n, ...]``, their ``mean`` and
    per-element ``std`` over S (``[n, ...]``), the ground ``truth`` and per-item ``meta``."""

    samples: State
    mean: State
    std: State
    truth: State
    meta: list[Any] | None = None


def template_of(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling template of an observation batch: its state (shape only), mask and cond."""
    return {k: v for k, v in batch.items() if k not in _NOT_STATE}


def _leaves(s: State) -> list[Tensor]:
    return [s] if torch.is_tensor(s) else list(s.values())


@torch.no_grad()
def posterior_samples(module: Any, guidance: GuidanceFn, batch: Mapping[str, Any], n_samples: int, *,
                      steps: int | None = None, generator: torch.Generator | None = None,
                      progress: bool = False) -> State:
    """``n_samples`` draws ``[S, B, ...]`` for one batch of observations with the module's sampler,
    time grid and network extras, the denoiser guided by ``guidance(module.denoiser, batch,
    generator)``; its ``post_step`` (data consistency), if any, is handed to the sampler.

    (``DiffusionModule.sample`` takes no denoiser, so this runs the sampler itself exactly as
    ``sample`` does.)"""
    from .samplers.common import sampler_grid

    batch = to_device(dict(batch), module.device)
    template = template_of(batch)
    guided = guidance(module.denoiser, batch, generator=generator)
    hook = getattr(guided, "post_step", None)
    geometry = module.geometry.bind(template.get("mask"))
    fn = module.sampler
    kwargs = {} if hook is None else {"post_step": hook}
    ts = sampler_grid(module.process, fn, steps or module.sample_steps, spacing=module.sample_spacing,
                      device=module.device)
    extras = {k: template[k] for k in ("cond", "mask") if template.get(k) is not None}
    was = module.training
    module.eval()
    out = []
    try:
        for _ in range(int(n_samples)):
            x = module.process.prior_sample(template["x"], geometry, generator=generator)
            out.append(fn(guided, x, ts, process=module.process, geometry=geometry, extra_args=extras,
                          generator=generator, progress=progress, **kwargs))
    finally:
        module.train(was)
    return tree_map(lambda *v: torch.stack(v), *out)


def run(module: Any, datamodule: Any, guidance: GuidanceFn, *, n: int, batch_size: int, posterior: int = 8,
        steps: int | None = None, generator: torch.Generator | None = None, progress: bool = False) -> Posterior:
    """Posterior samples for ``n`` observations of ``datamodule.observations(n, batch_size)``."""
    if int(posterior) < 1:
        raise ConfigError(f"config key 'sample.posterior_samples' must be >= 1, got {posterior}")
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches: Iterable[Mapping[str, Any]] = datamodule.observations(int(n), int(batch_size))
    draws, truths, metas = [], [], []
    has_meta = True
    for batch in batches:
        if not isinstance(batch, Mapping) or "x" not in batch or "observation" not in batch:
            raise ConfigError(f"{type(datamodule).__name__}.observations() must yield dicts with 'x' (the truth) and "
                              "'observation'")
        meta = batch.get("meta")
        has_meta = has_meta and meta is not None
        if meta is not None:
            metas.extend(meta)
        truths.append(to_device(batch["x"], "cpu"))
        draws.append(to_device(posterior_samples(module, guidance, batch, posterior, steps=steps, generator=generator,
                                                 progress=progress), "cpu"))
    if not truths:
        raise RunFailed(f"{type(datamodule).__name__}.observations({n}, {batch_size}) yielded no observations")
    samples = tree_map(lambda *v: torch.cat(v, 1), *draws)
    bad = sum(int((~torch.isfinite(v)).sum()) for v in _leaves(samples))
    if bad:
        total = sum(v.numel() for v in _leaves(samples))
        raise RunFailed(f"conditional sampling produced {bad} non-finite values out of {total} (nothing was "
                        f"written): the guidance ({guidance!r}) may be too strong for this model and sampler")
    mean = tree_map(lambda v: v.mean(0), samples)
    std = tree_map(lambda v: v.std(0, correction=1) if v.shape[0] > 1 else torch.zeros_like(v[0]), samples)
    return Posterior(samples, mean, std, cat(truths), metas if has_meta else None)


def default_metrics(mean: State, truth: State, samples: State) -> dict[str, float]:
    """RMSE and MAE of the posterior mean, the empirical coverage of the mean +- 2 std interval
    (std over the samples ``[S, N, ...]``, per element, with a 1e-6 relative rounding tolerance so
    exactly known entries count as covered) and the mean std; per variable of a dict state
    (``key/rmse`` ...)."""
    if isinstance(truth, Mapping):
        out = {}
        for k in truth:
            out.update({f"{k}/{m}": v for m, v in default_metrics(mean[k], truth[k], samples[k]).items()})
        return out
    err = (mean.double() - truth.double().to(mean.device))
    s = samples.double()
    std = s.std(0, correction=1) if s.shape[0] > 1 else torch.zeros_like(err)
    # a rounding tolerance, so that entries known exactly (std 0, e.g. inpainted observations) count as covered
    tol = 1e-6 * (1 + truth.double().abs().to(err.device))
    return {"rmse": float(err.pow(2).mean().sqrt()), "mae": float(err.abs().mean()),
            "coverage_2std": float((err.abs() <= 2 * std + tol).double().mean()),
            "mean_std": float(std.mean())}

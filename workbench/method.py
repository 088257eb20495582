"""Generative methods: what the Lightning module trains and samples.

:class:`workbench.lit.GenerativeModule` holds one *method* and shares everything around it (the
per-step noise generator, optimiser, EMA, atomic checkpoints and resume, DDP, configs, CLI,
demo, evaluate). A method is an ``nn.Module`` with

* ``network`` - the trainable network (its parameters are the method's parameters);
* ``loss(batch, generator) -> LossOutput`` - the per-sample training loss ``[B]`` (and its parts
  per state variable) for a batch dict with the state under ``"x"`` and optional ``"mask"`` /
  ``"cond"``; all randomness comes from ``generator``;
* ``sample(template, *, steps=None, generator=None, progress=False, **kwargs) -> State`` -
  samples shaped like ``template["x"]`` (with its mask and conditioning), on the template's device.

:class:`DiffusionMethod` is affine-Gaussian diffusion / flow matching: a process, a
:class:`~workbench.precond.Denoiser`, a loss and a sampler. Bayesian flow networks
(:mod:`workbench.bayesflow`) are another method.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from .geometry import Euclidean, Geometry
from .losses import DenoisingScoreMatching, LossOutput
from .precond import Denoiser
from .processes.base import Process
from .samplers.common import sampler_grid
from .samplers.dpm_solver import sample_dpm_solver
from .state import State

__all__ = ["Method", "DiffusionMethod", "check_batch", "extras"]


@runtime_checkable
class Method(Protocol):
    """What :class:`workbench.lit.GenerativeModule` needs of a generative method (see module docs)."""

    network: nn.Module

    def loss(self, batch: dict, generator: torch.Generator | None) -> LossOutput: ...

    def sample(self, template: dict, *, steps: int | None = None, generator: torch.Generator | None = None,
               progress: bool = False, **kwargs: Any) -> State: ...


def check_batch(batch: Any) -> None:
    """Refuse a batch that is not a dict with the state under ``"x"``."""
    if not isinstance(batch, dict) or "x" not in batch:
        raise TypeError("batches must be dicts with the state under 'x' (and optional 'mask', 'cond')")


def extras(batch: dict) -> dict[str, Any]:
    """The batch entries handed to the network besides the state: ``cond`` and ``mask`` when set."""
    return {k: batch[k] for k in ("cond", "mask") if batch.get(k) is not None}


class DiffusionMethod(nn.Module):
    """Diffusion / flow matching as a method: ``network`` wrapped in a :class:`Denoiser` for ``process``.

    Args:
        network: ``net(x, t, **extras) -> State``; extras are the batch's ``cond`` and ``mask``.
        process: forward process (VP, VE, EDM, interpolant, DDPM, joint, per-channel ...).
        geometry: the state's geometry (bound to each batch's mask).
        prediction: what the network outputs: eps / x0 / v / score / velocity / edm.
        loss: a per-sample loss (default: denoising score matching, uniform weighting).
        sampler: a ``sample_<algo>`` function or partial (default: DPM-Solver++(2M), on its log-SNR grid).
        sample_steps: default number of sampler steps.
        sample_spacing: time-grid spacing for sampling; None = the sampler's own grid
            (see :func:`workbench.samplers.common.sampler_grid`).
        sigma_data: EDM's data standard deviation (``prediction="edm"``).
    """

    def __init__(self, network: nn.Module, process: Process, geometry: Geometry | None = None,
                 prediction: str = "eps", loss: Callable | None = None, sampler: Callable | None = None,
                 sample_steps: int = 50, sample_spacing: str | None = None, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.denoiser = Denoiser(network, process, prediction=prediction, sigma_data=sigma_data)
        self.process = process
        self.geometry = geometry if geometry is not None else Euclidean()
        self.loss_fn = loss if loss is not None else DenoisingScoreMatching()
        self.sampler = sampler if sampler is not None else sample_dpm_solver
        self.sample_steps = int(sample_steps)
        self.sample_spacing = sample_spacing

    @property
    def network(self) -> nn.Module:
        return self.denoiser.net

    def loss(self, batch: dict, generator: torch.Generator | None) -> LossOutput:
        check_batch(batch)
        geometry = self.geometry.bind(batch.get("mask"))
        return self.loss_fn(self.denoiser, batch["x"], geometry=geometry, generator=generator, extras=extras(batch))

    def sample(self, template: dict, *, sampler: Callable | None = None, steps: int | None = None,
               spacing: str | None = None, generator: torch.Generator | None = None,
               progress: bool = False, denoiser: Any = None, **kwargs: Any) -> State:
        """Draw samples shaped like ``template["x"]`` from the prior through ``sampler`` (default: the
        method's) on ``steps`` grid points spaced by ``spacing`` (defaults: ``sample_steps``,
        ``sample_spacing``); ``denoiser`` replaces the method's for this call (a guidance wrapper
        around it, built per batch); ``kwargs`` go to the sampler (e.g. ``post_step``)."""
        ref = template["x"]
        ref = ref if torch.is_tensor(ref) else next(iter(ref.values()))
        geometry = self.geometry.bind(template.get("mask"))
        x = self.process.prior_sample(template["x"], geometry, generator=generator)
        fn = sampler or self.sampler
        ts = sampler_grid(self.process, fn, steps or self.sample_steps, spacing=spacing or self.sample_spacing,
                          device=ref.device, **kwargs)
        return fn(denoiser if denoiser is not None else self.denoiser, x, ts, process=self.process, geometry=geometry,
                  extra_args=extras(template), generator=generator, progress=progress, **kwargs)

"""Lightning wiring: :class:`GenerativeModule` (one generative *method* trained and sampled
with shared machinery), :class:`DiffusionModule` (the module for diffusion / flow matching),
an :class:`EMA` callback, and :class:`AtomicCheckpointIO` (checkpoints written atomically and
loaded with ``weights_only=True``).

Training noise is drawn from a generator seeded by (seed, global step, rank), so a run resumed
from a checkpoint continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from .geometry import Geometry
from .method import DiffusionMethod, Method, check_batch
from .processes.base import Process
from .state import State, batch_size, to_device

__all__ = ["GenerativeModule", "DiffusionModule", "EMA", "AtomicCheckpointIO", "load_checkpoint",
           "load_ema_weights", "default_loggers"]


class GenerativeModule(pl.LightningModule):
    """Trains and samples one generative ``method`` (see :mod:`workbench.method`): diffusion
    (:class:`~workbench.method.DiffusionMethod`), a Bayesian flow network
    (:class:`workbench.bayesflow.BayesianFlowMethod`), or a user's own.

    Everything around the method is shared: the seeded per-step noise generator, the optimiser
    and learning-rate decay, per-group gradient clipping, the non-finite-loss stop, EMA,
    checkpoints, the CLI.

    Args:
        method: an ``nn.Module`` with ``network``, ``loss(batch, generator)`` and
            ``sample(template, ...)``.
        lr, weight_decay, betas: AdamW settings; ``optimizer`` (a partial taking params) overrides.
        lr_decay: per-epoch exponential learning-rate decay (1.0 = none).
        sample_steps: default number of sampling steps (None: the method's own default).
        seed: seed of the per-step training-noise generator.
    """

    def __init__(self, method: Method, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), lr_decay: float = 1.0,
                 optimizer: Callable | None = None, sample_steps: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if type(self) is GenerativeModule:
            self.save_hyperparameters(ignore=["method", "optimizer"])
        for name in ("loss", "sample"):
            if not callable(getattr(method, name, None)):
                raise TypeError(f"{type(method).__name__} is not a method: it has no {name}() "
                                "(see workbench.method.Method)")
        self.method = method
        self.lr, self.weight_decay, self.betas, self.lr_decay = lr, weight_decay, tuple(betas), lr_decay
        self.optimizer_factory = optimizer
        self.default_steps = None if sample_steps is None else int(sample_steps)
        self.seed = int(seed)

    @property
    def network(self) -> nn.Module:
        return self.method.network

    # -- helpers ----------------------------------------------------------------------
    def _generator(self, salt: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + salt * 7919 + self.global_rank * 104_729) % (2**63 - 1))
        return g

    def _loss(self, batch: dict, generator: torch.Generator) -> Any:
        check_batch(batch)
        return self.method.loss(batch, generator)

    # -- Lightning hooks ------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self._loss(batch, self._generator(self.global_step))
        loss = out.loss.mean()
        if not torch.isfinite(loss):
            self._diverged(loss, out)
        n = batch_size(batch["x"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=False)
        if len(out.parts) > 1:
            for k, v in out.parts.items():
                self.log(f"train/loss_{k}", v.mean(), batch_size=n)
        return loss

    def _diverged(self, loss: Tensor, out: Any) -> None:
        from .errors import RunFailed

        parts = ", ".join(f"{k} {float(v.mean()):.3g}" for k, v in out.parts.items()) if len(out.parts) > 1 else ""
        where = ""
        if self._trainer is not None and self.trainer.default_root_dir:
            where = f"; the last good checkpoint is kept in {os.path.join(self.trainer.default_root_dir, 'checkpoints')}"
        raise RunFailed(
            f"the training loss became {float(loss.detach())} at step {self.global_step} (epoch {self.current_epoch})"
            f"{' (' + parts + ')' if parts else ''}{where}; likely causes: non-finite or unscaled data, a learning "
            f"rate too high (module.lr={self.lr:g}), or a noise schedule outside its range (e.g. DDPM beta_end >= 1)")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self._loss(batch, self._generator(10**9 + batch_idx))
        loss = out.loss.mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=batch_size(batch["x"]), sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(params)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas)
        if self.lr_decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as configured; a network with ``clip_groups()`` (lists of parameters) has each
        group's norm clipped on its own (GDSS clips its X and A networks separately)."""
        groups = getattr(self.network, "clip_groups", None)
        if groups is None or not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        for params in groups():
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], gradient_clip_val)

    # -- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, template: dict, *, steps: int | None = None, generator: torch.Generator | None = None,
               progress: bool = False, **kwargs: Any) -> State:
        """Draw samples shaped like ``template["x"]`` (with its ``mask`` and ``cond``), in eval mode,
        on the module's device; ``kwargs`` go to the method's ``sample``."""
        template = to_device(template, self.device)
        was_training = self.training
        self.eval()
        try:
            return self.method.sample(template, steps=steps or self.default_steps, generator=generator,
                                      progress=progress, **kwargs)
        finally:
            self.train(was_training)

    # -- checkpoints written before the method split kept the denoiser at the top level -------
    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        old = prefix + "denoiser."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "method." + key[len(prefix):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DiffusionModule(GenerativeModule):
    """A diffusion / flow model: a :class:`GenerativeModule` holding a
    :class:`~workbench.method.DiffusionMethod` (``network`` wrapped in a :class:`Denoiser` for
    ``process``). ``denoiser``, ``process``, ``geometry``, ``loss_fn``, ``sampler``,
    ``sample_steps`` and ``sample_spacing`` are the method's.

    Args:
        network: ``net(x, t, **extras) -> State``; extras are the batch's ``cond`` and ``mask``.
        process: forward process (VP, VE, EDM, interpolant, DDPM, joint ...).
        geometry: the state's geometry (bound to each batch's mask).
        prediction: what the network outputs: eps / x0 / v / score / velocity / edm.
        loss: a per-sample loss (default: denoising score matching, uniform weighting).
        sampler: a ``sample_<algo>`` function or partial (default: DPM-Solver++(2M), on its log-SNR grid).
        sample_steps: default number of sampler steps.
        sample_spacing: time-grid spacing for sampling ("time", "logsnr", "karras", "quadratic"); None =
            the grid the sampler is built for (its ``default_spacing``: log-SNR for DPM-Solver, the
            rho-spaced "karras" grid for Heun, ...; see :func:`workbench.samplers.common.sampler_grid`),
            else the process's default (uniform in t; EDM's rho schedule).
        lr, weight_decay, betas: Adam(W) settings; ``optimizer`` (a partial taking params) overrides.
        lr_decay: per-epoch exponential learning-rate decay (1.0 = none).
        seed: seed of the per-step training-noise generator.
    """

    def __init__(self, network: nn.Module, process: Process, geometry: Geometry | None = None,
                 prediction: str = "eps", loss: Callable | None = None, sampler: Callable | None = None,
                 sample_steps: int = 50, sample_spacing: str | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), lr_decay: float = 1.0,
                 optimizer: Callable | None = None, sigma_data: float = 0.5, seed: int = 0) -> None:
        method = DiffusionMethod(network, process, geometry, prediction=prediction, loss=loss, sampler=sampler,
                                 sample_steps=sample_steps, sample_spacing=sample_spacing, sigma_data=sigma_data)
        super().__init__(method, lr=lr, weight_decay=weight_decay, betas=betas, lr_decay=lr_decay,
                         optimizer=optimizer, seed=seed)
        self.save_hyperparameters(ignore=["network", "process", "geometry", "loss", "sampler", "optimizer"])

    #: attributes that live on the method (reading and assigning them goes there)
    _ON_METHOD = frozenset({"denoiser", "process", "geometry", "loss_fn", "sampler", "sample_steps",
                            "sample_spacing"})

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ would register an assigned module here, beside the method's
        if name in DiffusionModule._ON_METHOD and "method" in self._modules:
            setattr(self.method, name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # denoiser, process, geometry, loss_fn, sampler, sample_steps, sample_spacing read the method's
        if name in DiffusionModule._ON_METHOD and "method" in self.__dict__.get("_modules", {}):
            return getattr(self._modules["method"], name)
        return super().__getattr__(name)

    @staticmethod
    def _extras(batch: dict) -> dict[str, Any]:
        from .method import extras

        return extras(batch)

    @torch.no_grad()
    def sample(self, template: dict, *, sampler: Callable | None = None, steps: int | None = None,
               spacing: str | None = None, generator: torch.Generator | None = None,
               progress: bool = False, **kwargs: Any) -> State:
        """Draw samples shaped like ``template["x"]`` (with its ``mask`` and ``cond``).

        Args:
            template: a batch dict from ``datamodule.sample_template(n)``.
            sampler: a ``sample_<algo>`` callable (default: the module's).
            steps: number of steps on ``process.time_grid`` (default: ``sample_steps``).
            spacing: the grid's spacing (default: ``sample_spacing``, else the sampler's own).
        """
        return super().sample(template, sampler=sampler, steps=steps, spacing=spacing, generator=generator,
                              progress=progress, **kwargs)


class EMA(pl.Callback):
    """Exponential moving average of the weights (Polyak averaging).

    The average is updated once per optimiser step (``trainer.global_step`` advancing), not per
    batch: with ``accumulate_grad_batches=k`` it moves once every k batches. It is swapped in for
    validation and kept in the checkpoint (so a resumed run continues it exactly).
    ``with ema.average(module):`` swaps it in for sampling.

    Args:
        decay: EMA decay per optimiser step.
        warmup: if True, the n-th update (n = 1, 2, ...) uses min(decay, (1 + n) / (10 + n)).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow: dict[str, Tensor] | None = None
        self.updates = 0          # optimiser steps averaged so far
        self.step: int | None = None   # trainer.global_step at the last update

    @property
    def state_key(self) -> str:
        return "EMA"

    def _params(self, module: nn.Module) -> dict[str, Tensor]:
        return {n: p for n, p in module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shadow is None:
            self.shadow = {n: p.detach().clone() for n, p in self._params(pl_module).items()}
        else:
            self.shadow = {n: v.to(pl_module.device) for n, v in self.shadow.items()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the step the average stands at (global_step is restored by now, not yet in on_fit_start;
        # Lightning runs checkpoint callbacks last, so a checkpoint holds the average of its step)
        self.step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.step is None or trainer.global_step > self.step:  # an optimiser step was taken
            # (global_step counts optimiser steps: under gradient accumulation not every batch)
            self._update(pl_module, trainer.global_step)

    @torch.no_grad()
    def _update(self, pl_module: pl.LightningModule, step: int) -> None:
        assert self.shadow is not None
        self.updates += 1
        self.step = step
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        for n, p in self._params(pl_module).items():
            self.shadow[n].lerp_(p.detach(), 1.0 - d)

    @contextlib.contextmanager
    def average(self, module: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``module``."""
        if self.shadow is None:
            yield
            return
        params = self._params(module)
        backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(backup[n])

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shadow is not None and not trainer.sanity_checking:
            self._ctx = self.average(pl_module)
            self._ctx.__enter__()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.__exit__(None, None, None)
            self._ctx = None

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates, self.shadow = state["decay"], state["updates"], state["shadow"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint IO that writes to a temporary file and renames it (a crash never leaves a
    half-written checkpoint) and loads with ``weights_only=True`` (no unpickling of code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def load_ema_weights(module: nn.Module, checkpoint: dict[str, Any]) -> bool:
    """Copy the EMA average stored in a checkpoint into ``module``'s parameters.

    Entries without a matching parameter are ignored. Returns False when the checkpoint has no EMA.
    """
    ema = (checkpoint.get("callbacks") or {}).get("EMA") or {}
    shadow = ema.get("shadow")
    if not shadow:
        return False
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in shadow.items():
            if name not in params and "method." + name in params:  # saved before the method split
                name = "method." + name
            if name in params:
                params[name].copy_(value)
    return True


def load_checkpoint(path: Any, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), with a clear error for a bad file."""
    from .data import load_tensors

    return load_tensors(path, map_location=map_location, what="checkpoint")


def default_loggers(save_dir: str) -> list[Any]:
    """Lightning's CSV logger in ``<save_dir>/logs/version_<k>``, plus TensorBoard when it is installed.

    Each (re)start of training gets a new version folder, so a resumed run never overwrites the
    metrics logged before the crash.
    """
    import importlib.util

    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(save_dir=save_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TensorBoardLogger(save_dir=save_dir, name="tensorboard"))
    return loggers

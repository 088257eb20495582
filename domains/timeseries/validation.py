"""Checkpoint selection by forecast quality, as TSDiff selects its checkpoints.

TSDiff (``EvaluateCallback`` on the reference's main branch) forecasts a validation split with
quantile self-guidance every 50 epochs and keeps the weights with the lowest CRPS; with a constant
learning rate the last checkpoint is not the best one. :class:`ForecastValidation` does the same on
the windows our datamodule holds out at the end of each *train* series (so, unlike the reference's
main branch, the validation targets were never trained on), logs ``val/crps`` and writes the best
checkpoint as ``checkpoints/best.ckpt``; ``workbench evaluate ... checkpoint=best`` uses it.

The datamodule holds out several horizons per series, rolling back from the test start
(``datamodule.val_windows``; by default enough for 64 windows): a CRPS over a single 24-step
window moves more between two checkpoints by chance than by training, so the "best" checkpoint
was picked by noise. ``max_windows`` and ``max_series`` bound the cost (:func:`select_windows`).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from workbench.lit import EMA

from .forecast import TSDiff

__all__ = ["ForecastValidation", "select_windows"]


def select_windows(dm: Any, max_series: int | None = None, max_windows: int | None = None) -> list:
    """The validation entries of ``dm`` to forecast.

    ``max_series`` = n: only the windows of the first n series (all of their windows);
    ``max_windows`` = n: at most n windows in all, the horizon nearest the test start of every
    series first, then the one before it, and so on (the datamodule's order), so that n windows
    cover min(n, number of series) series. Both may be given (series first). None = no bound."""
    entries = list(getattr(dm, "val_series", None) or [])
    index = getattr(dm, "val_index", None)
    if index is None or len(index) != len(entries):
        # a datamodule without the index: series told apart by item_id, in order of appearance
        ids: dict[Any, int] = {}
        index = [(ids.setdefault(e.item_id, len(ids)), 0) for e in entries]
    if max_series is not None:
        entries = [e for e, (i, _) in zip(entries, index) if i < int(max_series)]
    if max_windows is not None:
        entries = entries[: int(max_windows)]
    return entries


class ForecastValidation(pl.Callback):
    """Every ``every_n_epochs`` epochs: guided forecasts of the validation windows, CRPS, best checkpoint.

    Args:
        every_n_epochs: how often (TSDiff: 50).
        guidance, scale: the self-guidance to validate with (the experiment's ``task``).
        num_samples: samples per series (TSDiff's callback: 16).
        max_windows: forecast at most n validation windows, spread over the series (a CPU budget;
            None = all; see :func:`select_windows`).
        max_series: forecast only the windows of the first n series (None = all). Until this change
            it capped the number of *windows*; configs that meant that now say ``max_windows``.
        batch_size: sequences per network call.
        filename: the best checkpoint, next to ``last.ckpt``.
        dirpath: where to write it (default: the ModelCheckpoint's directory).
        seed: the sampling seed, the same at every validation so that epochs are compared on equal noise.
        use_ema: validate the EMA average kept by the core's :class:`workbench.lit.EMA` callback
            instead of the raw weights (TSDiff has no EMA; the best checkpoint holds both).
    """

    def __init__(self, every_n_epochs: int = 50, guidance: str = "quantile", scale: float = 2.0,
                 num_samples: int = 16, max_series: int | None = None, batch_size: int = 64,
                 filename: str = "best.ckpt", dirpath: str | None = None, seed: int = 0,
                 use_ema: bool = False, max_windows: int | None = None) -> None:
        from workbench.errors import check_int

        max_series = check_int(max_series, "callbacks.forecast_val.max_series", minimum=1, allow_none=True)
        max_windows = check_int(max_windows, "callbacks.forecast_val.max_windows", minimum=1, allow_none=True)
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if guidance not in ("quantile", "mse"):
            raise ValueError(f"guidance must be 'quantile' or 'mse', got {guidance!r}")
        self.every, self.guidance, self.scale = int(every_n_epochs), guidance, float(scale)
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.max_series, self.max_windows = max_series, max_windows
        self.filename, self.dirpath, self.seed, self.use_ema = filename, dirpath, int(seed), bool(use_ema)
        self.best = math.inf
        self.best_epoch = -1
        self.history: list[dict[str, float]] = []
        self._ema: EMA | None = None

    @property
    def state_key(self) -> str:
        return "ForecastValidation"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # found once, at the start, so that a missing EMA callback fails before any training
        self._ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None) if self.use_ema else None
        if self.use_ema and self._ema is None:
            raise ValueError("ForecastValidation(use_ema=True) needs the EMA callback (callbacks.ema)")

    def _path(self, trainer: pl.Trainer) -> Path:
        d = self.dirpath or getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        return Path(d) / self.filename

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every or trainer.sanity_checking or trainer.fast_dev_run:
            return
        dm = trainer.datamodule
        entries = select_windows(dm, self.max_series, self.max_windows)
        if not entries:
            return
        t0 = time.perf_counter()
        with self._ema.average(pl_module) if self._ema is not None else contextlib.nullcontext():
            fc = TSDiff.from_datamodule(pl_module, dm).predict(
                entries, guidance=self.guidance, scale=self.scale, num_samples=self.num_samples,
                batch_size=self.batch_size, seed=self.seed, progress=False)
        crps = float(fc.metrics(entries)["CRPS"])
        pl_module.log("val/crps", crps, batch_size=len(entries))
        self.history.append({"epoch": epoch, "step": trainer.global_step, "crps": crps})
        improved = crps < self.best
        if improved:
            self.best, self.best_epoch = crps, epoch
            # Lightning's *save* flag: False = the full checkpoint (the EMA average lives in the
            # callbacks' state); left unset, Lightning logs "`weights_only` was not set" at every save.
            # Every load goes through workbench.lit.load_checkpoint (torch.load, weights_only=True).
            trainer.save_checkpoint(self._path(trainer), weights_only=False)
        if trainer.is_global_zero:
            n_series = len({e.item_id for e in entries})
            print(f"workbench: epoch {epoch}: validation CRPS {crps:.4f} on {len(entries)} windows of {n_series} series "
                  f"({time.perf_counter() - t0:.0f} s){'; new best, saved ' + self.filename if improved else ''}",
                  file=sys.stderr, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.history = list(state.get("history", []))

"""Training infrastructure: resume after a crash, EMA, safe checkpoints, DDP."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.lit import EMA, load_checkpoint
from workbench.testing import assert_same_training, crash_and_resume

SMALL = [
         "experiment=toy/gmm", "datamodule.n_train=512", "datamodule.batch_size=128", "network.hidden=32",
         "trainer.max_epochs=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def test_resume_after_crash_matches_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    runs = crash_and_resume(SMALL, tmp_path, crash_step=10)
    assert runs["crashed"]["step"] == 8, "the last checkpoint is the end of epoch 2 (4 steps per epoch)"
    assert runs["full"]["step"] == 16
    assert_same_training(runs["full"], runs["resumed"])


class Evil:
    """An arbitrary object: loading it would need unpickling code."""


def test_checkpoint_loads_weights_only_and_bad_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.ckpt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"obj": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(RuntimeError, match="evil.ckpt"):
        load_checkpoint(tmp_path / "evil.ckpt")


class _Tiny:
    """A LightningModule (built lazily) that records its parameters after every optimiser step
    and, in validation, the parameters validation sees."""

    def __new__(cls):
        import pytorch_lightning as pl

        class Tiny(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.lin = torch.nn.Linear(3, 2)
                self.frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
                self.trajectory: list[dict[str, torch.Tensor]] = []
                self.seen_in_validation: list[dict[str, torch.Tensor]] = []

            def _snapshot(self) -> dict[str, torch.Tensor]:
                return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

            def training_step(self, batch, batch_idx):
                (x,) = batch
                return ((self.lin(x) - 1.0) ** 2).mean()

            def optimizer_step(self, *args, **kwargs):
                super().optimizer_step(*args, **kwargs)
                self.trajectory.append(self._snapshot())

            def validation_step(self, batch, batch_idx):
                self.seen_in_validation.append(self._snapshot())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Tiny()


def _fit_with_ema(ema: EMA, *, batches: int, accumulate: int = 1, epochs: int = 1):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    module = _Tiny()
    start = module._snapshot()
    data = DataLoader(TensorDataset(torch.randn(4 * batches, 3)), batch_size=4)
    val = DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=4)
    pl.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
               accelerator="cpu", callbacks=[ema]).fit(module, data, val)
    return module, start


def _ema_by_hand(start: dict, trajectory: list[dict], decay: float, warmup: bool, first: int = 1) -> dict:
    """shadow_0 = the initial weights; update k (k = first, first + 1, ...) after optimiser step k:
    shadow = d_k shadow + (1 - d_k) W_k, d_k = min(decay, (1 + k) / (10 + k)) with warm-up."""
    shadow = {n: v.clone() for n, v in start.items()}
    for k, w in enumerate(trajectory, start=first):
        d = min(decay, (1 + k) / (10 + k)) if warmup else decay
        shadow = {n: d * shadow[n] + (1 - d) * w[n] for n in shadow}
    return shadow


@pytest.mark.parametrize("warmup,accumulate", [(True, 1), (False, 1), (True, 2), (False, 3)])
def test_ema_callback_in_a_trainer_matches_the_hand_computed_average(warmup: bool, accumulate: int) -> None:
    """One update per optimiser step (not per batch: 6 batches with accumulate_grad_batches=k
    are 6 / k steps), warm-up counted in updates; validation sees the average, training the raw
    weights; frozen parameters are not averaged."""
    ema = EMA(decay=0.7, warmup=warmup)
    module, start = _fit_with_ema(ema, batches=6, accumulate=accumulate)
    steps = 6 // accumulate
    assert len(module.trajectory) == steps and ema.updates == steps and ema.step == steps
    expected = _ema_by_hand(start, module.trajectory, 0.7, warmup)
    assert set(ema.shadow) == {"lin.weight", "lin.bias"}
    for n in expected:
        torch.testing.assert_close(ema.shadow[n], expected[n], rtol=1e-6, atol=1e-7)
        # validation (end of the epoch) ran on the average; after it the raw weights are back
        torch.testing.assert_close(module.seen_in_validation[-1][n], expected[n], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(dict(module.named_parameters())[n].detach(), module.trajectory[-1][n])
    # the average lies strictly between the start and the last weights (it is neither)
    assert not torch.allclose(ema.shadow["lin.weight"], module.trajectory[-1]["lin.weight"])


def test_ema_state_continues_in_a_new_trainer() -> None:
    """A checkpoint's EMA state (decay, update count, average) continues the average in a new
    trainer, whose global step starts again at 0; warm-up goes on counting from the stored count."""
    ema = EMA(decay=0.9, warmup=True)
    _fit_with_ema(ema, batches=3)
    saved = ema.state_dict()
    assert set(saved) == {"decay", "updates", "shadow"} and saved["updates"] == 3
    resumed = EMA(decay=0.5, warmup=True)
    resumed.load_state_dict({**saved, "shadow": {n: v.clone() for n, v in saved["shadow"].items()}})
    assert resumed.decay == 0.9 and resumed.updates == 3
    module, _ = _fit_with_ema(resumed, batches=2)
    expected = _ema_by_hand(saved["shadow"], module.trajectory, 0.9, True, first=4)
    for n in expected:
        torch.testing.assert_close(resumed.shadow[n], expected[n], rtol=1e-6, atol=1e-7)
    assert resumed.updates == 5


def test_ema_average_context_swaps_and_restores() -> None:
    net = torch.nn.Linear(2, 2)
    ema = EMA(decay=0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ema.shadow = {n: v + 0.5 for n, v in before.items()}
    with ema.average(net):
        for n, p in net.named_parameters():
            assert torch.equal(p, before[n] + 0.5)
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n])
    with pytest.raises(ValueError):
        EMA(decay=1.5)


def test_ddp_two_cpu_processes_agree(tmp_path: Path) -> None:
    """Lightning DDP (gloo) with two CPU processes: both ranks end with identical weights."""
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "workbench.cli", "train", *SMALL, "trainer.max_epochs=2",
           "trainer.strategy=ddp", "trainer.devices=2", f"run_dir={run_dir}",
           "+callbacks.digest._target_=workbench.testing.WeightsDigest", f"+callbacks.digest.directory={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_RUN_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(run_dir / f"weights-rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2 * 2, "512 items / (2 ranks x 128) = 2 steps per epoch"

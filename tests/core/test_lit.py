"""Training infrastructure: resume after a crash, EMA, safe checkpoints, DDP."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.cli import compose_config, train
from workbench.lit import EMA, load_checkpoint
from workbench.testing import SimulatedCrash

SMALL = [
         "experiment=toy/gmm", "datamodule.n_train=512", "datamodule.batch_size=128", "network.hidden=32",
         "trainer.max_epochs=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def _final(run_dir: Path) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return {"weights": ckpt["state_dict"], "ema": ckpt["callbacks"]["EMA"]["shadow"],
            "step": ckpt["global_step"], "epoch": ckpt["epoch"]}


def test_resume_after_crash_matches_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    full = tmp_path / "full"
    train(compose_config([*SMALL, f"run_dir={full}"]))
    os.environ.pop("WORKBENCH_RUN_DIR", None)

    crashed = tmp_path / "crashed"
    crash = ["+callbacks.crash._target_=workbench.testing.CrashAfter", "+callbacks.crash.step=10"]
    with pytest.raises(SimulatedCrash):
        train(compose_config([*SMALL, f"run_dir={crashed}", *crash]))
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert _final(crashed)["step"] == 8, "the last checkpoint is the end of epoch 2 (4 steps per epoch)"
    train(compose_config([*SMALL, f"run_dir={crashed}"]))  # resumes from last.ckpt
    os.environ.pop("WORKBENCH_RUN_DIR", None)

    a, b = _final(full), _final(crashed)
    assert a["step"] == b["step"] == 16
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), f"weights differ at {k}"
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), f"EMA differs at {k}"


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


def test_ema_average_and_swap() -> None:
    net = torch.nn.Linear(2, 2)
    ema = EMA(decay=0.5)
    ema.shadow = {n: p.detach().clone() for n, p in net.named_parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    for n, p in net.named_parameters():
        ema.shadow[n].lerp_(p.detach(), 0.5)
    with ema.average(net):
        for n, p in net.named_parameters():
            assert torch.allclose(p, before[n] + 0.5)
    for n, p in net.named_parameters():
        assert torch.allclose(p, before[n] + 1.0)
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
    assert _final(run_dir)["step"] == 2 * 2, "512 items / (2 ranks x 128) = 2 steps per epoch"

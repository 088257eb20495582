"""The method seam: the Lightning module trains and samples any method, not only diffusion.

A user's own method (a Gaussian fitted by maximum likelihood, written from the protocol in
workbench/method.py alone) goes through the same CLI, checkpoints, resume and EMA as diffusion.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.cli import main
from workbench.lit import DiffusionModule, GenerativeModule, load_ema_weights
from workbench.losses import LossOutput
from workbench.processes import VP
from workbench.testing import assert_same_training, crash_and_resume
from workbench.toy import ToyMLP


class GaussianFitMethod(nn.Module):
    """Fits N(mu, diag(s^2)) by maximum likelihood; the training batch is jittered with noise from
    the step's generator, so resuming must restore the generator seeding exactly."""

    def __init__(self, network: nn.Module, jitter: float = 0.05) -> None:
        super().__init__()
        self.network = network          # any module; its parameters are not used by this method
        self.mu = nn.Parameter(torch.zeros(2))
        self.log_s = nn.Parameter(torch.zeros(2))
        self.jitter = jitter

    def loss(self, batch: dict, generator: torch.Generator | None) -> LossOutput:
        x = batch["x"]
        x = x + self.jitter * torch.randn(x.shape, generator=generator, device=x.device)
        nll = 0.5 * (((x - self.mu) / self.log_s.exp()) ** 2).sum(1) + self.log_s.sum()
        return LossOutput(loss=nll + 0.0 * sum(p.sum() for p in self.network.parameters()))

    def sample(self, template: dict, *, steps=None, generator=None, progress=False, **kwargs):
        z = torch.randn(template["x"].shape, generator=generator, device=template["x"].device)
        return self.mu + self.log_s.exp() * z


METHOD = "method={_target_: tests.core.test_method.GaussianFitMethod, _partial_: true}"
SMALL = ["experiment=toy/gmm", "datamodule.n_train=512", "datamodule.batch_size=128", "network.hidden=8",
         "network.depth=1", "module.lr=0.05", "trainer.max_epochs=6", "trainer.accelerator=cpu",
         "trainer.enable_progress_bar=false", "sample.n=2048", "sample.batch_size=2048", "sample.plot=false", METHOD]


def test_a_users_method_trains_resumes_and_evaluates_through_the_cli(tmp_path: Path, monkeypatch) -> None:
    """Guards: the module calling diffusion's loss instead of the method's (the fitted moments would
    not be the data's); noise not drawn from the per-step generator (resume would differ); EMA or
    checkpoints not covering a method's own parameters (mu / log_s missing or different)."""
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    runs = crash_and_resume(SMALL, tmp_path, crash_step=10)
    a = runs["full"]
    assert a["step"] == 24
    assert "method.mu" in a["weights"] and "method.mu" in a["ema"]
    assert_same_training(a, runs["resumed"])

    # the fitted Gaussian has the data's moments (the 8-mode mixture on a circle of radius 2:
    # mean 0, per-coordinate variance 2^2 / 2 + 0.25^2 = 2.0625); 24 steps at lr 0.05 get close
    mu, s = a["weights"]["method.mu"], a["weights"]["method.log_s"].exp()
    assert mu.abs().max() < 0.3 and ((s - 2.0625**0.5).abs() < 0.35).all(), (mu, s)

    full = tmp_path / "full"
    assert main(["evaluate", f"run_dir={full}", "sample.use_ema=false"]) == 0
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    metrics = json.loads((full / "metrics.json").read_text())["metrics"]
    assert any((full / "samples").iterdir())
    # a Gaussian covers every mode but puts much of its mass between them
    assert metrics["modes_covered"] == 1.0 and metrics["in_mode"] < 0.8, metrics


def test_checkpoints_from_before_the_method_split_still_load() -> None:
    """Guards the remapping of the old top-level ``denoiser.*`` keys (weights and EMA names): without
    it a checkpoint written by an earlier version fails to load (or, for EMA, silently loads nothing)."""
    torch.manual_seed(0)
    src = DiffusionModule(network=ToyMLP(dim=2, hidden=8, depth=1), process=VP())
    old = {k.removeprefix("method."): v.clone() for k, v in src.state_dict().items()}
    assert all(k.startswith("denoiser.") for k in old)
    dst = DiffusionModule(network=ToyMLP(dim=2, hidden=8, depth=1), process=VP())
    dst.load_state_dict(old)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    shadow = {k.removeprefix("method."): v + 1.0 for k, v in src.named_parameters()}
    assert load_ema_weights(dst, {"callbacks": {"EMA": {"shadow": shadow}}})
    for k, v in src.named_parameters():
        assert torch.equal(dict(dst.named_parameters())[k], v + 1.0), f"EMA weight {k} not loaded"


def test_an_object_that_is_not_a_method_is_refused() -> None:
    with pytest.raises(TypeError, match="has no loss"):
        GenerativeModule(nn.Linear(2, 2))


def test_a_bad_method_config_is_one_line_on_the_cli(tmp_path: Path, capsys) -> None:
    code = main(["train", "experiment=toy/gmm", f"run_dir={tmp_path / 'r'}", "trainer.max_epochs=1",
                 "method={_target_: torch.nn.Linear, _partial_: true}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "method" in err[0], err

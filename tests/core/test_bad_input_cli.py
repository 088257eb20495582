"""Issue 11 (core): bad config values stop before anything runs with one line naming the key, a
diverging loss stops training with the step and the causes (last good checkpoint kept), a run that
trains on nothing or samples non-finite values does not exit 0, and errors raised inside
Lightning's fit reach the CLI as one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench import cli
from workbench.errors import DataError, RunFailed

TOY = ["experiment=toy/gmm", "trainer.enable_progress_bar=false", "datamodule.n_train=256", "datamodule.n_val=64",
       "datamodule.n_test=64", "sample.n=64", "sample.batch_size=64", "sample.steps=4", "resume=false"]


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("workbench:") and "resuming" not in ln]
    return code, "\n".join(lines)


@pytest.mark.parametrize("override,key", [
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("datamodule.batch_size=0", "datamodule.batch_size"),
    ("seed=1.5", "seed"),
    ("sample.steps=0", "sample.steps"),
    ("module.sample_steps=-3", "module.sample_steps"),
    ("module.lr=-1", "module.lr"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
])
def test_bad_config_values_stop_before_anything_runs(override: str, key: str, tmp_path: Path, capsys) -> None:
    # bugs: `abc` ended in Lightning's bare AssertionError, batch_size=0 in a traceback, seed=1.5 was
    # used as 1, sample.steps=0 wrote raw noise as samples
    code, err = _run(["train", *TOY, f"run_dir={tmp_path / 'r'}", override], capsys)
    assert code == 2 and err.count("\n") == 0 and f"'{key}'" in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_schedule_outside_its_range_is_named(tmp_path: Path, capsys) -> None:
    # bug: process.beta_end=1.5 trained with NaN losses and exited 0
    code, err = _run(["train", *TOY, f"run_dir={tmp_path / 'r'}", "process=ddpm", "process.beta_end=1.5"], capsys)
    assert code == 2 and "'process'" in err and "beta_end" in err, err


def test_a_diverging_loss_stops_training_with_the_step(tmp_path: Path, capsys) -> None:
    # bug: NaN losses were logged and the run exited 0 with NaN samples
    run = tmp_path / "r"
    code, err = _run(["train", *TOY, f"run_dir={run}", "trainer.max_epochs=3", "module.lr=1e30"], capsys)
    assert code == 1 and "training loss became" in err and "at step" in err and "learning rate" in err, err
    assert err.count("\n") == 0


def test_zero_training_batches_is_not_a_success(tmp_path: Path, capsys) -> None:
    # bug: an empty training split trained 0 batches and exited 0
    code, err = _run(["train", *TOY, f"run_dir={tmp_path / 'r'}", "datamodule.n_train=0"], capsys)
    assert code in (1, 2) and err.count("\n") == 0 and ("0 batches" in err or "n_train" in err), err


def test_non_finite_samples_are_not_written(tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "r"
    assert cli.main(["train", *TOY, f"run_dir={run}", "trainer.max_epochs=1"]) == 0
    from workbench.lit import DiffusionModule

    real = DiffusionModule.sample

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        out[0, 0] = float("nan")
        return out

    monkeypatch.setattr(DiffusionModule, "sample", poisoned)
    capsys.readouterr()
    code, err = _run(["sample", f"run_dir={run}"], capsys)
    assert code == 1 and "non-finite" in err and "1 non-finite values" in err, err
    assert not (run / "samples").exists() or not any((run / "samples").iterdir())


def test_an_input_error_inside_fit_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # bug: cli.main caught only ConfigError / FileNotFoundError / FloatingPointError, so an error
    # raised in datamodule.setup() inside trainer.fit printed a whole traceback
    from workbench.toy import GaussianMixtureDataModule

    def bad_setup(self, stage=None):
        raise DataError("edge (3, 9) outside the 5 nodes of graph 2", file="user_graphs.json")

    monkeypatch.setattr(GaussianMixtureDataModule, "setup", bad_setup)
    code, err = _run(["train", *TOY, f"run_dir={tmp_path / 'r'}"], capsys)
    assert code == 2 and err == "workbench: error: user_graphs.json: edge (3, 9) outside the 5 nodes of graph 2"

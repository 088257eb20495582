"""Issue 12, points 1 and 4: help from the CLI itself (verbs, installed experiments, groups, one
experiment's data keys) and the thread setting of a run (chosen, applied, recorded, restored)."""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

from workbench import cli


def test_help_lists_verbs_installed_experiments_and_groups(capsys) -> None:
    # bug: `workbench --help` printed only the usage line
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "sample", "evaluate", "demo", "list", "show"):
        assert f"  {verb} " in out
    assert "toy/gmm " in out and "2-D Gaussian mixture" in out
    for ep in metadata.entry_points(group="workbench.demos"):   # every installed domain's demo experiment
        assert f"  {ep.name} " in out, ep.name
    assert "sampler" in out and "dpm_solver" in out and "heun" in out


def test_every_experiment_is_listed_and_composes() -> None:
    exps = cli.list_experiments()
    assert "toy/gmm" in exps and not any(k.split("/")[1].startswith("_") for k in exps)
    for name in list(exps)[:40]:
        cli.compose_config([f"experiment={name}"])  # a listed experiment must exist


def test_train_help_shows_the_experiments_data_keys(capsys) -> None:
    # bug: `workbench train --help` failed with LexerNoViableAltException: --help
    assert cli.main(["train", "experiment=toy/gmm", "--help"]) == 0
    out = capsys.readouterr().out
    assert "datamodule: workbench.toy.GaussianMixtureDataModule" in out
    assert "n_train" in out and "8192" in out and "whole config:" in out
    assert cli.main(["train", "--help"]) == 0 and "commands:" in capsys.readouterr().out
    assert cli.main(["show"]) == 2 and "experiment=" in capsys.readouterr().err


def test_threads_are_chosen_applied_recorded_and_restored(tmp_path: Path, monkeypatch) -> None:
    # bug: runs used torch's default threads whatever else ran on the machine (10-12 s per batch
    # instead of 0.2 with oversubscribed OpenMP threads) and nothing recorded the setting
    before = torch.get_num_threads()
    seen = []
    real = cli._train

    def spy(cfg, threads=(0, "")):
        seen.append(torch.get_num_threads())
        return real(cfg, threads)

    monkeypatch.setattr(cli, "_train", spy)
    base = ["experiment=toy/gmm", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "datamodule.n_train=64",
            "resume=false"]
    cli.train(cli.compose_config([*base, f"run_dir={tmp_path / 'a'}", "threads=1"]))
    v = json.loads((tmp_path / "a" / "versions.json").read_text())
    assert seen == [1] and v["threads"] == 1 and v["threads_source"] == "config key threads"
    assert torch.get_num_threads() == before
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cli.train(cli.compose_config([*base, f"run_dir={tmp_path / 'b'}"]))
    v = json.loads((tmp_path / "b" / "versions.json").read_text())
    assert 1 <= v["threads"] and v["threads_source"].startswith("auto") and seen[-1] == v["threads"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.choose_threads() == (1, "OMP_NUM_THREADS")
    with pytest.raises(cli.ConfigError, match="'threads'"):
        cli.choose_threads(0)


def test_torch_threads_context_restores_even_on_error() -> None:
    """Bug: the public ``torch_threads`` leaving torch at the block's thread count (a notebook cell that
    raises would then run every later cell single-threaded), or ignoring the requested count."""
    before = torch.get_num_threads()
    with cli.torch_threads(1) as (n, why):
        assert n == 1 and torch.get_num_threads() == 1 and why == "config key threads"
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"):
        with cli.torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before

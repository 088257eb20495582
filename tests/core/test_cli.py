"""The command line: train -> sample -> evaluate, one-line config errors, the demo report."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from workbench.cli import main

FAST = ["experiment=toy/gmm", "datamodule.n_train=512", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "sample.n=64", "sample.batch_size=32", "sample.steps=5"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch) -> None:
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    yield
    os.environ.pop("WORKBENCH_RUN_DIR", None)


def test_train_sample_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", *FAST, f"run_dir={run}"]) == 0
    for f in ("config.yaml", "versions.json", "checkpoints/last.ckpt", "logs/version_0/metrics.csv"):
        assert (run / f).exists(), f
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert main(["sample", f"run_dir={run}", "sampler=dpm_solver", "sample.n=40"]) == 0
    import torch

    samples = torch.load(run / "samples" / "samples.pt", weights_only=True)
    assert samples.shape == (40, 2)
    assert (run / "plots" / "samples.png").exists()
    assert main(["evaluate", f"run_dir={run}"]) == 0
    report = json.loads((run / "metrics.json").read_text())
    assert report["n_samples"] == 64 and "sliced_w2" in report["metrics"]


@pytest.mark.parametrize("args,needle", [
    (["train", "experiment=toy/gmm", "trainer.nonsense=1"], "trainer.nonsense"),
    (["train", "experiment=toy/gmm", "process.beta_min=-1"], "process"),
    (["train", "experiment=toy/unknown"], "experiment/toy/unknown"),
    (["train"], "datamodule"),
    (["train", "experiment=toy/gmm", "+trainer.bogus_flag=3"], "trainer"),
    (["evaluate"], "run_dir"),
])
def test_bad_config_is_one_line_naming_the_key(args, needle, capsys, tmp_path: Path) -> None:
    assert main([*args, f"run_dir={tmp_path / 'r'}"] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err, err


def test_unknown_key_on_an_existing_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", *FAST, f"run_dir={run}"]) == 0
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert main(["sample", f"run_dir={run}", "sample.nn=3"]) == 2
    assert "sample.nn" in capsys.readouterr().err
    # `checkpoint` picks the file; a missing one is named along with those that exist
    assert main(["sample", f"run_dir={run}", "checkpoint=best"]) == 2
    err = capsys.readouterr().err
    assert "best.ckpt" in err and "last.ckpt" in err, err
    assert main(["sample", f"run_dir={run}", "checkpoint=last", "sample.n=8"]) == 0


def test_demo_writes_report(tmp_path: Path, monkeypatch) -> None:
    """The report shows the toy run's own evaluation, and its mode statistics are what the
    samples the run saved give when counted by hand (8 modes of std 0.25 on a circle of radius 2:
    in_mode = share within 3 std of a centre, modes_covered = share of modes with >= 1 % of them)."""
    import math

    import torch

    from workbench import cli

    out = tmp_path / "demo"
    toy_only = [e for e in cli.demo_experiments(True) if e[0] == "toy/gmm"]
    monkeypatch.setattr(cli, "demo_experiments", lambda tiny: toy_only)   # the domains' demos: `make demo` in CI
    assert main(["demo", "--out", str(out), "--tiny"]) == 0
    report = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    toy = next(r for r in data["runs"] if r["experiment"] == "toy/gmm")
    run = json.loads((out / "toy_gmm" / "metrics.json").read_text())
    assert toy["metrics"] == run["metrics"] and run["n_samples"] == 512
    samples = torch.load(out / "toy_gmm" / "samples" / "samples.pt", weights_only=True).double()
    assert samples.shape == (512, 2)
    angle = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    centres = 2.0 * torch.stack([angle.cos(), angle.sin()], 1)
    nearest = torch.cdist(samples, centres).min(1)
    near = nearest.values < 3 * 0.25
    counts = torch.bincount(nearest.indices[near], minlength=8)
    assert toy["metrics"]["in_mode"] == pytest.approx(float(near.double().mean()))
    assert toy["metrics"]["modes_covered"] == pytest.approx(float((counts >= 0.01 * 512).double().mean()))
    assert "## toy/gmm" in report
    for k in ("sliced_w2", "in_mode", "modes_covered"):
        assert f"| {k} | {toy['metrics'][k]:.4g} |" in report
    assert [r["experiment"] for r in data["runs"]] == ["toy/gmm"]


def test_a_demo_run_without_metrics_fails_the_demo(tmp_path: Path, monkeypatch) -> None:
    """Bug: a domain whose evaluation returns nothing (or NaN) listed in the report as if it had run,
    so `make demo` in CI exits 0 with nothing shown for that domain."""
    from workbench import cli

    toy = [e for e in cli.demo_experiments(True) if e[0] == "toy/gmm"]
    monkeypatch.setattr(cli, "demo_experiments", lambda tiny: toy)
    for bad in ({}, {"sliced_w2": float("nan")}):
        monkeypatch.setattr(cli, "evaluate", lambda cfg, bad=bad: bad)
        with pytest.raises(cli.DemoFailure, match="toy/gmm evaluated to no finite metrics"):
            cli.demo(tmp_path / "demo", tiny=True)

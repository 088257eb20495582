"""Issue 13, point 5: per-sample metadata (an affine, a header ...) handed out with each template
item comes back to save_samples with the generated items, in order, through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from workbench import cli
from workbench.toy import GaussianMixtureDataModule


class MetaGMM(GaussianMixtureDataModule):
    """The toy, whose templates carry a fake per-item record (an id and a 4x4 affine)."""

    issued = 0

    def sample_template(self, n, generator=None):
        out = super().sample_template(n, generator)
        start = MetaGMM.issued
        MetaGMM.issued += n
        out["meta"] = [{"id": start + i, "affine": np.eye(4) * (start + i + 1), "units": "mm"} for i in range(n)]
        return out


def _trained_run(tmp_path: Path) -> Path:
    """A toy run trained for one epoch with MetaGMM's templates."""
    run = tmp_path / "run"
    assert cli.main(["train", "experiment=toy/gmm", f"run_dir={run}", "trainer.max_epochs=1",
                     "trainer.enable_progress_bar=false", "datamodule.n_train=64", "datamodule.n_test=32",
                     "resume=false", "datamodule._target_=tests.core.test_sample_meta.MetaGMM"]) == 0
    return run


def test_metadata_round_trip_through_sample_and_evaluate(tmp_path: Path) -> None:
    run = _trained_run(tmp_path)
    MetaGMM.issued = 0
    assert cli.main(["sample", f"run_dir={run}", "sample.n=10", "sample.batch_size=4", "sample.steps=3"]) == 0
    items = json.loads((run / "samples" / "meta.json").read_text())["items"]
    samples = torch.load(run / "samples" / "samples.pt", weights_only=True)
    assert len(items) == len(samples) == 10
    assert [m["id"] for m in items] == list(range(10))                  # in the order of the samples
    assert items[7]["affine"] == (np.eye(4) * 8).tolist() and items[7]["units"] == "mm"
    MetaGMM.issued = 0
    assert cli.main(["evaluate", f"run_dir={run}", "sample.n=6", "sample.batch_size=6", "sample.steps=3"]) == 0
    assert [m["id"] for m in json.loads((run / "samples-2" / "meta.json").read_text())["items"]] == list(range(6))


def test_a_second_call_keeps_the_first_outputs(tmp_path: Path) -> None:
    """Bug: a second ``sample`` / ``evaluate`` in one run directory overwriting the first's samples (or,
    in a domain whose writer refuses to overwrite, failing after the whole draw). Each call gets its
    own ``samples[-k]`` folder, plot and a copy of its report; ``metrics.json`` is the latest report."""
    run = _trained_run(tmp_path)
    for n in (4, 6, 8):
        MetaGMM.issued = 0
        assert cli.main(["evaluate", f"run_dir={run}", f"sample.n={n}", f"sample.batch_size={n}", "sample.steps=3"]) == 0
    for name, n in (("samples", 4), ("samples-2", 6), ("samples-3", 8)):
        assert len(torch.load(run / name / "samples.pt", weights_only=True)) == n
        report = json.loads((run / name / "metrics.json").read_text())
        assert report["n_samples"] == n and report["samples_dir"] == name
    assert (run / "plots" / "samples.png").exists() and (run / "plots" / "samples-3.png").exists()
    assert json.loads((run / "metrics.json").read_text())["samples_dir"] == "samples-3"


SEEN: list = []


def meta_metrics(samples, reference, meta=None):
    """A metrics function that takes the templates' records (as the crystal metrics do)."""
    SEEN.append([m["id"] for m in meta] if meta is not None else None)
    return {"n": float(len(samples))}


def test_metrics_receive_the_metadata_when_they_take_it(tmp_path: Path) -> None:
    """Bug: evaluate calling ``metrics(samples, reference)`` only, so a domain whose samples need their
    records to be scored (a crystal's composition) cannot be evaluated; or the records out of order."""
    run = _trained_run(tmp_path)
    MetaGMM.issued = 0
    SEEN.clear()
    assert cli.main(["evaluate", f"run_dir={run}", "sample.n=5", "sample.batch_size=2", "sample.steps=3",
                     "metrics._target_=tests.core.test_sample_meta.meta_metrics"]) == 0
    assert SEEN == [[0, 1, 2, 3, 4]]


def test_domains_without_metadata_are_unchanged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "experiment=toy/gmm", f"run_dir={run}", "trainer.max_epochs=1",
                     "trainer.enable_progress_bar=false", "datamodule.n_train=64", "resume=false"]) == 0
    assert cli.main(["sample", f"run_dir={run}", "sample.n=8", "sample.batch_size=8", "sample.steps=3"]) == 0
    assert not (run / "samples" / "meta.json").exists()

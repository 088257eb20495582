"""The crystals domain through the CLI: train a tiny CrysBFN on the embedded perovskite prototypes,
evaluate CSP and generation (CIF / CSV outputs with the test crystals' identities, finite metrics),
and bad input ending in one line with exit code 2."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("pymatgen")
pytest.importorskip("smact")
pytest.importorskip("matminer")

from workbench import cli  # noqa: E402
from workbench.cli import compose_config, evaluate, train  # noqa: E402

TINY = ["datamodule.n_prototypes=48", "datamodule.batch_size=16", "datamodule.max_test=6", "network.hidden=16",
        "network.layers=1", "network.num_freqs=4", "network.time_dim=8", "method.steps=5", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "sample.n=6", "sample.batch_size=3", "threads=1", "resume=false"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)


@pytest.mark.parametrize("task", ["csp", "gen"])
def test_train_evaluate_writes_cifs_and_finite_metrics(tmp_path: Path, task: str) -> None:
    """Bugs: evaluate scoring samples without their records (CSP against the wrong test crystal, or a
    crash), samples of successive batches not concatenable, NaN in metrics.json, CIFs not written or
    not naming the test crystal they predict."""
    run = tmp_path / "run"
    cfg = compose_config(["experiment=crystals/demo", f"run_dir={run}", f"method.task={task}", *TINY])
    train(cfg)
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    metrics = evaluate(cfg)
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    report = json.loads((run / "metrics.json").read_text())
    assert report["metrics"] == pytest.approx(metrics)
    cifs = sorted((run / "samples").glob("sample_*.cif"))
    meta = json.loads((run / "samples" / "meta.json").read_text())["items"]
    assert len(meta) == 6 and len(cifs) == round(metrics["built_fraction"] * 6)   # one CIF per built structure
    if task == "csp":
        assert {"match_rate", "n", "n_matched", "built_fraction"} <= set(metrics) and metrics["n"] == 6
        assert [m["index"] for m in meta] == list(range(6))       # test crystals in order across batches
        from pymatgen.core import Structure

        for cif in cifs:
            idx = int(cif.stem.split("_")[1])
            got = sorted(s.specie.Z for s in Structure.from_file(cif))
            assert got == sorted(meta[idx]["atomic_numbers"])        # the composition of its test crystal
    else:
        assert {"struct_valid", "comp_valid", "valid", "cov_recall", "cov_precision"} <= set(metrics)
    assert (run / "plots" / "samples.png").exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    """Bugs: a CIF that does not parse, or a bad config value, ending in a traceback or exit 0."""
    bad = tmp_path / "mine.csv"
    bad.write_text('material_id,cif\nx-1,"data_x\\n_cell_length_a -3\\n"\n')
    code = cli.main(["train", "experiment=crystals/demo", f"run_dir={tmp_path / 'r'}", "datamodule.source=csv",
                     f"datamodule.path={bad}", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and str(bad) in err[-1] and "row 0" in err[-1]
    code = cli.main(["train", "experiment=crystals/demo", f"run_dir={tmp_path / 'r2'}", "method.task=both", *TINY])
    assert code == 2 and ".task' must be" in capsys.readouterr().err


@pytest.mark.parametrize("experiment,task", [("crystals/demo", "gen"), ("crystals/diffcsp_perov_5_csp", "csp")])
def test_training_resumed_after_a_crash_ends_as_the_uninterrupted_run(tmp_path: Path, experiment: str,
                                                                       task: str) -> None:
    """Bugs: noise of the joint flow (von Mises coordinates, Gaussian lattice, discrete types) or of the
    wrapped-normal diffusion drawn from the global RNG rather than the step's generator, or a flow
    state (EMA, schedule cache) not in the checkpoint: the resumed run's weights would differ."""
    from workbench.testing import assert_same_training, crash_and_resume

    overrides = [f"experiment={experiment}", "datamodule.source=prototypes", "datamodule.n_prototypes=48",
                 "datamodule.batch_size=16", "datamodule.max_test=6", "network.hidden=16", "network.layers=1",
                 "network.num_freqs=4", "network.time_dim=8", "trainer.max_epochs=3",
                 "trainer.enable_progress_bar=false", "threads=1"]
    if experiment == "crystals/demo":
        overrides += [f"method.task={task}", "method.steps=5"]
    runs = crash_and_resume(overrides, tmp_path, crash_step=4)
    assert runs["crashed"]["step"] == 3, "the last checkpoint is the end of epoch 1 (48 / 16 = 3 steps)"
    assert runs["full"]["step"] == 9
    assert_same_training(runs["full"], runs["resumed"])

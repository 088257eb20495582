"""No load path of the project runs code pickled into a checkpoint (issue 10, defect 10).

The planted checkpoint holds an object whose ``__reduce__`` opens (creates) a marker file when
unpickled: a plain ``torch.load(weights_only=False)`` does create it. Every path must refuse the
file with a one-line error and leave no marker: ``workbench.data.load_tensors``,
``workbench.lit.load_checkpoint``, ``AtomicCheckpointIO.load_checkpoint``, Lightning's resume
(``Trainer.fit(ckpt_path=...)``, as ``workbench train`` resumes), the CLI's ``sample`` /
``evaluate`` with ``checkpoint=...`` (``best`` is the checkpoint ForecastValidation selects).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from workbench.data import UnsafeOrCorruptFile, load_tensors

TORCH_ADVICE = ("weights_only` set to `False", "weights_only=False", "add_safe_globals", "trust")


class _Planted:
    """Unpickling this object calls ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _Planted(marker)}, path)
    return path


def _assert_one_clean_line(message: str, path: Path) -> None:
    assert len(message.strip().splitlines()) == 1, message
    assert path.name in message, message
    assert not any(a in message for a in TORCH_ADVICE), f"repeats torch's advice: {message}"


def test_the_planted_checkpoint_does_run_code_when_loaded_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    _plant(tmp_path / "evil.ckpt", marker)
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists(), "the planted payload is inert, so the tests below would prove nothing"


def test_load_tensors_refuses_code_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _plant(tmp_path / "evil.ckpt", marker)
    with pytest.raises(UnsafeOrCorruptFile) as info:
        load_tensors(path, what="checkpoint")
    assert not marker.exists()
    _assert_one_clean_line(str(info.value), path)
    assert "open" in str(info.value) and info.value.__suppress_context__    # torch's text not chained
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UnsafeOrCorruptFile) as info:
        load_tensors(garbage)
    _assert_one_clean_line(str(info.value), garbage)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2), "step": 3, "name": "x"}, good)
    assert load_tensors(good)["step"] == 3


def _lit_load(path: Path) -> None:
    from workbench.lit import load_checkpoint

    load_checkpoint(path)


def _checkpoint_io_load(path: Path) -> None:
    from workbench.lit import AtomicCheckpointIO

    AtomicCheckpointIO().load_checkpoint(path)


def _lightning_resume(path: Path) -> None:
    import pytorch_lightning as pl

    from workbench.lit import AtomicCheckpointIO
    from workbench.toy import adapter

    a = adapter(n_train=128)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[AtomicCheckpointIO()],
                         default_root_dir=str(path.parent))
    trainer.fit(a.module(), datamodule=a.datamodule, ckpt_path=str(path))


LOADERS = {"lit.load_checkpoint": _lit_load, "AtomicCheckpointIO": _checkpoint_io_load,
           "Trainer.fit(ckpt_path)": _lightning_resume}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_checkpoint_loaders_never_run_pickled_code(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _plant(tmp_path / "evil.ckpt", marker)
    with pytest.raises(Exception) as info:
        LOADERS[name](path)
    assert not marker.exists(), f"{name} ran the checkpoint's code"
    assert path.name in str(info.value)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_checkpoint_loaders_fail_in_one_clean_line(name: str, tmp_path: Path) -> None:
    path = _plant(tmp_path / "evil.ckpt", tmp_path / "marker")
    with pytest.raises(Exception) as info:
        LOADERS[name](path)
    _assert_one_clean_line(str(info.value), path)


# -- the CLI ------------------------------------------------------------------------------------------
FAST = ["experiment=toy/gmm", "datamodule.n_train=256", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "sample.n=16", "sample.batch_size=16", "sample.steps=3"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.cli import main

    run = tmp_path_factory.mktemp("safe_load") / "run"
    assert main(["train", *FAST, f"run_dir={run}"]) == 0
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    return run


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; return its error text (a raised exception's message or what it printed)."""
    from workbench.cli import main

    try:
        code = main(args)
    except Exception as e:  # noqa: BLE001 - the exception is the outcome under test
        return str(e)
    finally:
        os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert code != 0, f"{args} succeeded on a planted checkpoint"
    return capsys.readouterr().err


CLI_CASES = {
    "sample checkpoint=evil": (["sample", "checkpoint=evil"], "evil.ckpt"),
    "evaluate checkpoint=best": (["evaluate", "checkpoint=best"], "best.ckpt"),
    "train (resume last.ckpt)": (["train", *FAST, "resume=true"], "last.ckpt"),
}


def _cli_on_planted(name: str, toy_run: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, Path]:
    """Run CLI case ``name`` with its checkpoint replaced by a planted one (restored afterwards);
    stderr and the planted file's path."""
    args, ckpt = CLI_CASES[name]
    path = toy_run / "checkpoints" / ckpt
    saved = path.read_bytes() if path.exists() else None
    _plant(path, marker)
    try:
        return _cli([*args, f"run_dir={toy_run}"], capsys), path
    finally:
        if saved is not None:
            path.write_bytes(saved)
        else:
            path.unlink()


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_never_runs_pickled_code(name: str, toy_run: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    err, _ = _cli_on_planted(name, toy_run, marker, capsys)
    assert not marker.exists(), f"`workbench {name}` ran the checkpoint's code"
    assert CLI_CASES[name][1] in err, err


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_refuses_in_one_clean_line(name: str, toy_run: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    err, path = _cli_on_planted(name, toy_run, tmp_path / "marker", capsys)
    lines = [ln for ln in err.splitlines() if not ln.startswith("workbench: resuming from")]
    _assert_one_clean_line("\n".join(lines).replace("workbench: error: ", ""), path)


# -- the time-series validation: where the "weights_only was not set" line came from ------------------
def test_forecast_validation_saves_without_lightnings_weights_only_notice(tmp_path: Path) -> None:
    """Lightning logs "`weights_only` was not set, defaulting to `False`" when ``save_checkpoint``
    is called without its (save-side) flag: ForecastValidation did, at every new best."""
    pytest.importorskip("pandas")
    import pytorch_lightning as pl

    from workbench.domains.timeseries import adapter
    from workbench.domains.timeseries.validation import ForecastValidation
    from workbench.lit import EMA, AtomicCheckpointIO

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("pytorch_lightning")
    handler, level = _Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        a = adapter()
        val = ForecastValidation(every_n_epochs=1, num_samples=2, max_series=2, dirpath=str(tmp_path),
                                 use_ema=True)
        pl.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[EMA(0.9), val],
                   plugins=[AtomicCheckpointIO()], num_sanity_val_steps=0).fit(a.module(), datamodule=a.datamodule)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert val.history, "no validation ran"
    assert not [m for m in messages if "weights_only" in m], messages
    best = load_tensors(tmp_path / "best.ckpt", what="checkpoint")     # loads weights-only ...
    assert best["callbacks"]["EMA"]["shadow"], "best.ckpt lost the EMA average"   # ... and is complete

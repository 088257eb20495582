"""Every config composes, instantiates and runs: each experiment (core and installed domains)
with fast_dev_run, and each process / sampler group option on the toy."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest
import torch

from workbench.cli import build, compose_config, config_packages, train

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "workbench" / "configs"


def _experiments() -> list[str]:
    """Every experiment config; files starting with '_' are shared parts, not experiments."""
    roots = [CONFIG_ROOT / "experiment"] + [Path(str(resources.files(p))) / "experiment" for p in config_packages()]
    return sorted(p.relative_to(r).with_suffix("").as_posix() for r in roots for p in r.rglob("*.yaml")
                  if not p.name.startswith("_"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / group).glob("*.yaml"))


def _fast_dev_run_cases() -> list:
    """Every experiment; a ``<name>_cpu`` variant of an experiment that is also listed is marked slow
    (the variants change sizes and budgets only; each is still composed and resolved by
    :func:`test_cpu_variant_composes_and_resolves`, and its parent runs here)."""
    names = _experiments()
    return [pytest.param(e, marks=pytest.mark.slow) if e.endswith("_cpu") and e[:-4] in names else e
            for e in names]


@pytest.mark.parametrize("experiment", [e for e in _experiments() if e.endswith("_cpu")])
def test_cpu_variant_composes_and_resolves(experiment: str) -> None:
    """Bug: a ``_cpu`` variant overriding a key its parent does not have, or an interpolation that
    does not resolve (its fast_dev_run is in the slow tier)."""
    from omegaconf import OmegaConf

    cfg = compose_config([f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.name.endswith("_cpu"), cfg.name


@pytest.mark.parametrize("experiment", _fast_dev_run_cases())
def test_experiment_fast_dev_run(experiment: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    overrides = [f"experiment={experiment}", "debug=fast", f"run_dir={tmp_path}", "trainer.accelerator=cpu"]
    cfg = compose_config(overrides)
    if str(cfg.datamodule.get("_target_", "")).endswith("MoleculeDataModule"):
        overrides.append("+datamodule.limit=300")  # encode 300 rows, not the whole data set
        cfg = compose_config(overrides)
    if str(cfg.datamodule.get("_target_", "")).endswith("CrystalDataModule"):
        # parse 64 rows per CSV (not 3,800 at ~80 rows/s into a fresh cache) and few prototypes
        overrides += ["datamodule.max_rows=64", "datamodule.max_test=16", "datamodule.n_prototypes=64",
                      "datamodule.batch_size=16"]
        cfg = compose_config(overrides)
    if str(cfg.datamodule.get("_target_", "")).endswith("GenericGraphDataModule"):
        overrides.append("datamodule.batch_size=2")   # grid: 8 dense 361-node graphs per step took ~20 s
        cfg = compose_config(overrides)
    try:
        train(cfg)
    except FileNotFoundError as e:  # a data set that is not under WORKBENCH_DATA here
        pytest.skip(f"{experiment}: {e}")
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "versions.json").exists()


@pytest.mark.parametrize("process", _options("process"))
@pytest.mark.parametrize("sampler", _options("sampler"))
def test_process_sampler_groups_instantiate_and_sample(process: str, sampler: str) -> None:
    cfg = compose_config(["experiment=toy/gmm", f"process={process}", f"sampler={sampler}", "debug=fast"])
    if process in ("linear", "trig"):
        cfg.module.prediction = "velocity"
    dm, module, metrics = build(cfg)
    dm.setup("fit")
    template = dm.sample_template(8)
    if sampler in ("em", "pc", "s4") and not module.process.stochastic:
        with pytest.raises(ValueError, match="not defined"):
            module.sample(template, steps=3)
        return
    out = module.sample(template, steps=3)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    assert set(metrics(out, dm.reference())) >= {"sliced_w2", "in_mode"}


def _trainer_from_groups(cfg, **overrides):
    """A pl.Trainer built from the composed trainer / callbacks / logger groups alone."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        made = instantiate(node)
        loggers.extend(made if isinstance(made, list) else [made])
    kwargs = {**OmegaConf.to_container(cfg.trainer, resolve=True), **overrides}
    return pl.Trainer(callbacks=callbacks, logger=loggers or False, **kwargs), callbacks, loggers


@pytest.mark.parametrize("group,option", [("trainer", o) for o in _options("trainer")] +
                         [("logger", o) for o in _options("logger")] + [("callbacks", o) for o in _options("callbacks")])
def test_other_groups_instantiate_and_train(group: str, option: str, tmp_path: Path) -> None:
    """Each trainer / logger / callbacks option builds a pl.Trainer with what it declares, and
    (but for DDP, which needs two processes) trains the toy for two steps, writing its checkpoint
    and logs where the group says."""
    import importlib.util

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from workbench.lit import EMA

    if group == "logger" and option == "tensorboard" and not (importlib.util.find_spec("tensorboard")
                                                              or importlib.util.find_spec("tensorboardX")):
        pytest.skip("logger=tensorboard needs the tensorboard package")
    run = tmp_path / "run"
    cfg = compose_config(["experiment=toy/gmm", f"{group}={option}", f"run_dir={run}", "datamodule.n_train=64",
                          "datamodule.batch_size=32", "network.hidden=8", "trainer.enable_progress_bar=false",
                          "trainer.max_epochs=1"])
    trainer, callbacks, loggers = _trainer_from_groups(cfg)
    assert trainer.max_epochs == 1 and trainer.gradient_clip_val == 1.0
    ckpt = next(c for c in callbacks if isinstance(c, pl.callbacks.ModelCheckpoint))  # every option keeps one
    assert Path(ckpt.dirpath) == run / "checkpoints" and ckpt.save_last
    ema = [c for c in callbacks if isinstance(c, EMA)]
    assert len(ema) == (0 if (group, option) == ("callbacks", "none") else 1)
    if ema:
        assert ema[0].decay == 0.999 and ema[0].warmup
    assert any(isinstance(lg, CSVLogger) and Path(lg.save_dir) == run for lg in loggers)
    if (group, option) == ("logger", "tensorboard"):
        assert {type(lg).__name__ for lg in loggers} == {"CSVLogger", "TensorBoardLogger"}
    if (group, option) == ("trainer", "ddp"):
        from pytorch_lightning.strategies import DDPStrategy

        assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
        return
    if (group, option) == ("trainer", "cpu"):
        assert isinstance(trainer.accelerator, pl.accelerators.CPUAccelerator)
    dm, module, _ = build(cfg)
    trainer, _, _ = _trainer_from_groups(cfg, accelerator="cpu", limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ("EMA" in saved["callbacks"]) == bool(ema)
    assert (run / "logs" / "version_0" / "metrics.csv").exists()


def test_search_path_finds_a_domain_config_package(tmp_path: Path) -> None:
    """Domains add config packages to Hydra's search path (the CLI passes `pkg://` entries
    found through the `workbench.configs` entry points); here the same with a folder."""
    exp = tmp_path / "experiment" / "fakedomain"
    exp.mkdir(parents=True)
    (exp / "tiny.yaml").write_text("# @package _global_\ndefaults:\n  - /experiment/toy/gmm\nname: fake_tiny\n")
    cfg = compose_config(["experiment=fakedomain/tiny", f"hydra.searchpath=[file://{tmp_path}]"])
    assert cfg.name == "fake_tiny" and cfg.datamodule._target_.endswith("GaussianMixtureDataModule")

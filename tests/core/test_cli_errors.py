"""Issue 10, defects 6 and 8 (CLI part): a demo skips a domain whose extra is missing, config
mistakes stay one line, bugs inside a domain surface with their traceback, and the CLI leaves the
caller's environment as it found it."""
from __future__ import annotations

import os
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from workbench import cli


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "wb_user_mod.py").write_text(textwrap.dedent('''
        class NeedsSegyio:
            def __init__(self):
                import segyio  # noqa: F401

        class Buggy:
            def __init__(self, n=1):
                self.x = 1 / (n - 1)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "segyio", None)  # as if not installed
    yield
    sys.modules.pop("wb_user_mod", None)


def _cfg(node):
    return OmegaConf.create({"datamodule": node})


def test_instantiate_classifies_errors(user_module) -> None:
    # bug: every failure became "bad value under config key", so a missing extra could not be
    # skipped and a bug inside a domain was reported as the user's config mistake
    with pytest.raises(cli.MissingExtra, match=r"pip install 'workbench\[seismic\]'"):
        cli._instantiate(_cfg({"_target_": "wb_user_mod.NeedsSegyio"}), "datamodule")
    with pytest.raises(ZeroDivisionError):
        cli._instantiate(_cfg({"_target_": "wb_user_mod.Buggy"}), "datamodule")
    with pytest.raises(cli.ConfigError, match="config key 'datamodule'.*unexpected keyword"):
        cli._instantiate(_cfg({"_target_": "wb_user_mod.Buggy", "bogus": 3}), "datamodule")
    with pytest.raises(cli.ConfigError, match="cannot find target 'wb_user_mod.Nope'"):
        cli._instantiate(_cfg({"_target_": "wb_user_mod.Nope"}), "datamodule")
    with pytest.raises(cli.ConfigError, match="cannot find target 'nosuchpkg.Thing'"):
        cli._instantiate(_cfg({"_target_": "nosuchpkg.Thing"}), "datamodule")


def _fake_demo(monkeypatch, tmp_path, exc):
    monkeypatch.setattr(cli, "demo_experiments", lambda tiny: [("toy/gmm", ["trainer.max_epochs=1"])])

    def boom(cfg):
        raise exc
    monkeypatch.setattr(cli, "train", boom)


def test_demo_skips_a_domain_whose_extra_is_missing(monkeypatch, tmp_path, capsys) -> None:
    err = ModuleNotFoundError("No module named 'segyio'", name="segyio")
    _fake_demo(monkeypatch, tmp_path, err)
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == 0
    report = (tmp_path / "d" / "report.md").read_text()
    assert "Skipped" in report and "pip install 'workbench[seismic]'" in report
    assert "skipping toy/gmm" in capsys.readouterr().err


def test_demo_names_a_failing_domain_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys) -> None:
    _fake_demo(monkeypatch, tmp_path, ZeroDivisionError("division by zero in the network"))
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "toy/gmm failed: ZeroDivisionError" in err[0] and "--debug" in err[0]
    with pytest.raises(cli.DemoFailure) as info:
        cli.main(["--debug", "demo", "--out", str(tmp_path / "d")])
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    # an ImportError that is not a missing package is a bug too, not a skip
    _fake_demo(monkeypatch, tmp_path, ImportError("cannot import name 'X' from 'workbench.core'"))
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == 1


def test_train_leaves_the_environment_alone(tmp_path) -> None:
    # bug: _resolve_run_dir wrote WORKBENCH_RUN_DIR into os.environ for good, so a second
    # train() in the same notebook silently reused the first run's directory
    import torch

    ours = lambda: {k: v for k, v in os.environ.items() if not k.startswith(("TORCH", "PYTORCH"))}  # noqa: E731
    before, rng = ours(), torch.get_rng_state()
    cfg = cli.compose_config(["experiment=toy/gmm", f"run_dir={tmp_path / 'a'}", "trainer.max_epochs=1",
                              "trainer.enable_progress_bar=false", "datamodule.n_train=64", "resume=false"])
    cli.train(cfg)
    assert ours() == before and torch.equal(torch.get_rng_state(), rng)
    cfg2 = cli.compose_config(["experiment=toy/gmm", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                               "datamodule.n_train=64", "resume=false"])
    assert cli._resolve_run_dir(cfg2) != tmp_path / "a"

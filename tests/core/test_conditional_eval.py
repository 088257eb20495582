"""Conditional / inverse sampling from configs (``guidance`` group, ``workbench.conditional``):
each test names the bug it guards. The model is the exact denoiser of a correlated 2-D
Gaussian, so the posterior of an observation is known."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench import conditional
from workbench.cli import _conditional, _instantiate, compose_config, list_groups, main
from workbench.data import DomainDataModule
from workbench.errors import ConfigError
from workbench.geometry import Euclidean
from workbench.guidance import (DPS, DataConsistency, DataConsistencyGuidance, DPSGuidance, ReplacementGuidance,
                                SelfGuidanceFactory)
from workbench.operators import LinearOperator, Mask
from workbench.processes import VP
from workbench.samplers import sample_euler_maruyama
from workbench.testing import GaussianDenoiser

MEAN = torch.tensor([0.0, 1.0])
COV = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
FACTORIES = {"replacement": ReplacementGuidance(), "dps": DPSGuidance(zeta=1.0, energy="squared"),
             "self_guidance": SelfGuidanceFactory(scale=1.0), "data_consistency": DataConsistencyGuidance()}


class _Module(nn.Module):
    """What the conditional loop uses of a DiffusionModule, around the exact Gaussian denoiser."""

    def __init__(self, mean: torch.Tensor = MEAN, cov: torch.Tensor = COV) -> None:
        super().__init__()
        self.process = VP()
        self.denoiser = GaussianDenoiser(self.process, mean, cov)
        self.geometry = Euclidean()
        self.sampler = partial(sample_euler_maruyama)
        self.sample_steps, self.sample_spacing = 30, None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class _Sum(LinearOperator):
    """y = x_0 + x_1 (a general, non-mask operator)."""

    def forward(self, x):
        return x.sum(1, keepdim=True)

    def adjoint(self, y):
        return y.expand(-1, 2)


class _GaussData(DomainDataModule):
    """Test points of N(MEAN, COV); observation: coordinate 0 (a Mask), or the sum (``_Sum``)."""

    def __init__(self, operator: str = "mask") -> None:
        super().__init__(batch_size=64)
        self.operator = operator

    def setup(self, stage=None) -> None:
        g = torch.Generator().manual_seed(1)
        self.truth = MEAN + torch.randn(256, 2, generator=g) @ torch.linalg.cholesky(COV).T
        self.train_set = [{"x": t} for t in self.truth]

    def observations(self, n, batch_size):
        for i in range(0, n, batch_size):
            x = self.truth[i:i + batch_size]
            op = Mask(torch.tensor([1.0, 0.0]).expand_as(x).clone()) if self.operator == "mask" else _Sum()
            yield {"x": x, "observation": {"y": op.forward(x), "operator": op}}


def _exact_mean(x0: torch.Tensor) -> torch.Tensor:
    return MEAN[1] + COV[0, 1] / COV[0, 0] * (x0 - MEAN[0])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_factory_conditions_each_batch_on_its_own_observation(name: str) -> None:
    """Bugs: the factory ignores the batch's observation, or the loop builds the guided denoiser
    once and reuses the first batch's observation for the second. The posterior mean of the
    hidden coordinate must follow the exact E[x_1 | x_0] in *both* batches (ignoring the
    observation gives ~0.9 off, a stale first batch ~1.3), far below the prior's error."""
    g = torch.Generator().manual_seed(0)
    post = conditional.run(_Module(), _GaussData(), FACTORIES[name], n=128, batch_size=64, posterior=8, generator=g)
    exact = _exact_mean(post.truth[:, 0])
    for half in (slice(0, 64), slice(64, 128)):
        err = float((post.mean[half, 1] - exact[half]).pow(2).mean().sqrt())
        assert err < 0.6, (name, half, err)
    prior_err = float((post.truth[:, 1] - MEAN[1]).pow(2).mean().sqrt())
    post_err = float((post.mean[:, 1] - post.truth[:, 1]).pow(2).mean().sqrt())
    assert post_err < 0.8 * prior_err, (post_err, prior_err)


def test_posterior_std_is_per_element_over_the_samples() -> None:
    """Bug: the std (or mean) taken over the wrong axis (the observations instead of the samples).
    It must be [n, 2]: ~0 on the observed coordinate (Replacement writes it), about the exact
    posterior std sqrt(1 - 0.9^2) = 0.44 on the hidden one."""
    g = torch.Generator().manual_seed(0)
    post = conditional.run(_Module(), _GaussData(), ReplacementGuidance(), n=64, batch_size=64, posterior=16,
                           generator=g)
    assert post.samples.shape == (16, 64, 2) and post.mean.shape == (64, 2) and post.std.shape == (64, 2)
    torch.testing.assert_close(post.std, post.samples.std(0))
    assert float(post.std[:, 0].max()) < 1e-5
    assert 0.3 < float(post.std[:, 1].mean()) < 0.8
    torch.testing.assert_close(post.mean[:, 0], post.truth[:, 0])


def test_default_metrics_score_the_mean_and_the_spread() -> None:
    """Bug: the metrics computed on one sample instead of the mean, or coverage without the std.
    Samples truth +- 1 have the truth as their mean: RMSE 0, coverage 1."""
    truth = torch.randn(10, 3)
    samples = torch.stack([truth + 1, truth - 1])
    m = conditional.default_metrics(samples.mean(0), truth, samples)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-6) and m["mae"] == pytest.approx(0.0, abs=1e-6)
    assert m["coverage_2std"] == 1.0
    far = conditional.default_metrics(truth + 10, truth, samples + 10)
    assert far["rmse"] == pytest.approx(10.0) and far["coverage_2std"] == 0.0


def test_dps_uses_the_operator() -> None:
    """Bug: DPS ignoring the ForwardOperator (comparing y with x0 itself). With independent
    coordinates (prior mean of x_1 = 2) and a Mask observing x_0 only, the hidden x_1 keeps its
    prior mean; taking y (zero-filled at x_1) as a full observation would pull it to 0. The
    ``gaussian`` energy is the squared one over 2 noise_std^2."""
    module = _Module(torch.tensor([0.0, 2.0]), 0.5 * torch.eye(2))
    x = torch.tensor([[1.5, 2.0]]).expand(64, 2)
    op = Mask(torch.tensor([1.0, 0.0]).expand(64, 2).clone(), noise_std=0.1)
    dm = _GaussData()
    dm.setup()
    dm.observations = lambda n, bs: iter([{"x": x, "observation": {"y": op.forward(x), "operator": op}}])
    post = conditional.run(module, dm, DPSGuidance(zeta=1.0, energy="squared"), n=64, batch_size=64, posterior=4,
                           generator=torch.Generator().manual_seed(0))
    assert abs(float(post.mean[:, 1].mean()) - 2.0) < 0.3, float(post.mean[:, 1].mean())
    assert float(post.mean[:, 0].mean()) > 0.7, float(post.mean[:, 0].mean())   # pulled from 0 towards y = 1.5
    dps = DPS(module.denoiser, op, op.forward(x), energy="gaussian")
    x0 = torch.randn(64, 2)
    sq = DPS(module.denoiser, op, op.forward(x), energy="squared").measurement_energy(x0)
    torch.testing.assert_close(dps.measurement_energy(x0), sq / (2 * 0.1 ** 2))
    with pytest.raises(ValueError, match="noise_std > 0"):
        DPS(module.denoiser, Mask(torch.ones(2)), x, energy="gaussian")
    # the original callable API still works
    legacy = DPS(module.denoiser, lambda v: v[:, :1], x[:, :1], zeta=2.0, squared=True)
    assert legacy.energy == "squared"


def test_data_consistency_reaches_the_step_and_holds_for_a_general_operator() -> None:
    """Bug: the factory result's post_step never handed to the sampler (data consistency silently
    off), or a projection that only works for masks. With A x = x_0 + x_1 (CG projection in
    measurement space) every posterior sample ends with A x = y, which unguided samples do not."""
    g = torch.Generator().manual_seed(0)
    dm = _GaussData("sum")
    post = conditional.run(_Module(), dm, DataConsistencyGuidance(), n=64, batch_size=64, posterior=4, generator=g)
    y = post.truth.sum(1)
    resid = (post.samples.sum(-1) - y).abs().max()
    assert float(resid) < 0.05, float(resid)     # y taken to the last grid time's noise level, sigma ~ 0.01
    exact = DataConsistency(_Module().denoiser, _Sum(), y[:, None], noisy=False)
    x = torch.randn(64, 2)
    torch.testing.assert_close(exact.post_step(x, torch.tensor(0.5)).sum(1), y, atol=1e-5, rtol=0)
    prox = DataConsistency(_Module().denoiser, _Sum(), y[:, None], noisy=False, rho=1.0).post_step(x, torch.tensor(0.5))
    # (A^T A + I) u = A^T y + x: A u lies between A x and y (2/3 of the way for this A)
    torch.testing.assert_close(prox.sum(1), x.sum(1) + 2 / 3 * (y - x.sum(1)), atol=1e-4, rtol=0)


def test_refuses_a_datamodule_without_observations() -> None:
    """Bug: guidance=... on a datamodule without observations() crashing deep inside (or
    silently sampling unconditionally); it must be one line naming the datamodule."""
    class NoObs(DomainDataModule):
        def setup(self, stage=None):
            self.train_set = [{"x": torch.zeros(2)}]

    with pytest.raises(ConfigError, match=r"config key 'guidance'.*NoObs has no observations\(\)") as e:
        conditional.run(_Module(), NoObs(), ReplacementGuidance(), n=4, batch_size=4)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="needs observation key.*'operator'"):
        DPSGuidance()(_Module().denoiser, {"x": torch.zeros(1, 2), "observation": {"y": torch.zeros(1, 2)}})


def test_cli_conditional_writes_mean_std_and_scores_the_mean(tmp_path: Path) -> None:
    """Bug: metrics.json scoring one posterior sample instead of the mean, or the uncertainty maps
    not written. The reported RMSE is the saved mean's against the saved truth; the saved std is
    per element."""
    cfg = compose_config(["experiment=toy/gmm", "guidance=replacement", f"run_dir={tmp_path}", "sample.observations=64",
                          "sample.posterior_samples=6", "sample.batch_size=32", "sample.steps=20", "sample.plot=false"])
    metrics = _conditional(cfg, _GaussData(), _Module(), tmp_path, score=True)
    mean = torch.load(tmp_path / "samples" / "mean" / "samples.pt", weights_only=True)
    std = torch.load(tmp_path / "samples" / "std" / "samples.pt", weights_only=True)
    truth = torch.load(tmp_path / "samples" / "truth" / "samples.pt", weights_only=True)
    posterior = torch.load(tmp_path / "samples" / "posterior" / "samples.pt", weights_only=True)
    assert mean.shape == std.shape == truth.shape == (64, 2) and posterior.shape == (64 * 6, 2)
    torch.testing.assert_close(posterior.view(64, 6, 2).mean(1), mean)
    assert metrics["rmse"] == pytest.approx(float((mean - truth).double().pow(2).mean().sqrt()), rel=1e-6)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["posterior_samples"] == 6 and report["n_observations"] == 64 and report["metrics"] == metrics


def test_guidance_group_composes_and_is_listed() -> None:
    """Bug: a guidance config that does not compose or instantiate, or a group `workbench list`
    does not show."""
    from hydra.utils import instantiate

    assert list_groups()["guidance"] == sorted(FACTORIES)
    assert compose_config(["experiment=toy/gmm"]).guidance is None
    for name in FACTORIES:
        made = instantiate(compose_config(["experiment=toy/gmm", f"guidance={name}"]).guidance)
        assert type(made) is type(FACTORIES[name])
    with pytest.raises(ConfigError, match="guidance.energy"):
        _instantiate(compose_config(["experiment=toy/gmm", "guidance=dps", "guidance.energy=l1"]), "guidance")


def test_toy_end_to_end_from_the_cli(tmp_path: Path, capsys) -> None:
    """`workbench train` then `workbench evaluate guidance=...` on the toy: every guidance config
    runs from the command line and writes metrics.json with the conditional scores."""
    run = tmp_path / "run"
    assert main(["train", "experiment=toy/gmm", f"run_dir={run}", "trainer.max_epochs=1", "datamodule.n_train=256",
                 "datamodule.batch_size=128", "network.hidden=16", "trainer.enable_progress_bar=false",
                 "threads=1"]) == 0
    for name in FACTORIES:
        assert main(["evaluate", f"run_dir={run}", f"guidance={name}", "sample.observations=32",
                     "sample.posterior_samples=2", "sample.steps=5", "sample.plot=false", "threads=1"]) == 0, name
        report = json.loads((run / "metrics.json").read_text())
        assert {"rmse", "mae", "coverage_2std", "hidden/rmse", "baseline_rmse"} <= set(report["metrics"])
        assert report["guidance"]["_target_"].endswith(type(FACTORIES[name]).__name__)
    capsys.readouterr()
    assert main(["evaluate", f"run_dir={run}", "guidance=dps", "sample.posterior_samples=0"]) == 2
    assert "sample.posterior_samples" in capsys.readouterr().err
    # the gaussian energy needs measurement noise; the toy's inpainting has none: one line naming the key
    assert main(["evaluate", f"run_dir={run}", "guidance=dps", "guidance.energy=gaussian", "threads=1"]) == 2
    err = capsys.readouterr().err
    assert "guidance.energy" in err and "noise_std=0" in err and "Traceback" not in err

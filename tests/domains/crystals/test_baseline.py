"""The DiffCSP-style diffusion baseline (experiment crystals/diffcsp_perov_5_csp[_cpu]) on the embedded
perovskite prototypes (no download): the config composes into a JointProcess over frac (VE wrapped
normal on the torus) and lattice (VP), one training step is finite and O(1), sampling stays on the
torus, and evaluate through the CLI gives finite CSP metrics. Tiny sizes, one torch thread."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("pymatgen")

from workbench.cli import build, compose_config, evaluate, train  # noqa: E402

EXP = "experiment=crystals/diffcsp_perov_5_csp_cpu"
TINY = ["datamodule.source=prototypes", "datamodule.n_prototypes=48", "datamodule.batch_size=16",
        "datamodule.max_test=6", "network.hidden=16", "network.layers=1", "network.num_freqs=4", "network.time_dim=8",
        "module.sample_steps=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "sample.n=6",
        "sample.batch_size=3", "threads=1", "resume=false"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _built(tmp_path: Path, *extra: str):
    cfg = compose_config([EXP, f"run_dir={tmp_path / 'run'}", *TINY, *extra])
    dm, module, metrics = build(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm, module, metrics


def test_config_composes_into_the_diffcsp_processes(tmp_path: Path) -> None:
    """Bugs: the root's default process (vp.yaml) merged into the JointProcess (its beta_min / beta_max
    keys become bogus 'processes' and construction fails); frac on a Euclidean geometry (no wrapping) or
    off DiffCSP's sigma range 0.005 -> 0.5; the network built for the BFN (2 pi period, log-concentration
    input, x0-style heads) instead of diffusion on fractions."""
    from workbench.geometry import Euclidean, Periodic
    from workbench.processes import VE, VP, JointProcess

    cfg, dm, module, metrics = _built(tmp_path)
    proc = module.process
    assert isinstance(proc, JointProcess) and set(proc.processes) == {"frac", "lattice"}
    frac, lat = proc.processes["frac"], proc.processes["lattice"]
    assert isinstance(frac, VE) and (frac.sigma_min, frac.sigma_max) == (0.005, 0.5)
    assert isinstance(lat, VP)
    assert (frac.t_eps, frac.t_end, frac.t_max) == (lat.t_eps, lat.t_end, lat.t_max)
    geo = module.geometry
    assert type(geo.part("frac")) is Periodic and geo.part("frac").period == 1.0
    assert type(geo.part("lattice")) is Euclidean
    net = module.network if hasattr(module, "network") else module.denoiser.net
    assert net.output == "diffusion" and net.coord_period == 1.0 and not net.use_log_conc
    assert dict(cfg.module.prediction) == {"frac": "eps", "lattice": "eps"}
    assert cfg.sampler._target_.endswith("sample_pc") and cfg.sampler.corrector == "langevin"
    # the _cpu network is the CrysBFN _cpu one (equal network size in the benchmark)
    full = compose_config([EXP])
    bfn = compose_config(["experiment=crystals/perov_5_csp_cpu"])
    for k in ("hidden", "layers", "num_freqs", "time_dim"):
        assert full.network[k] == bfn.network[k]
    assert full.datamodule.batch_size == bfn.datamodule.batch_size == 128


def test_one_training_step_is_finite_and_order_one(tmp_path: Path) -> None:
    """Bugs: a non-finite loss; frac trained on the raw wrapped-normal score (targets up to
    1 / sigma_min = 200, a loss of order 1e4 at initialisation instead of ~1); a head that receives no
    gradient (a variable left out of the loss)."""
    _, dm, module, _ = _built(tmp_path)
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    out = module._loss(batch, torch.Generator().manual_seed(0))
    loss = out.loss.mean()
    assert torch.isfinite(loss) and 0 < float(loss.detach()) < 10, float(loss.detach())
    assert set(out.parts) == {"frac", "lattice"} and all(torch.isfinite(v).all() for v in out.parts.values())
    opt.zero_grad()
    loss.backward()
    net = module.network if hasattr(module, "network") else module.denoiser.net
    for head in (net.coord_out, net.lattice_out):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    opt.step()
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_sampling_stays_on_the_torus_with_finite_lattices(tmp_path: Path) -> None:
    """Bugs: frac leaving [0, 1) (the periodic geometry's projection not applied by the PC sampler, or a
    Euclidean frac geometry); padded atoms getting coordinates; non-finite lattices; the NFE of the
    predictor-corrector sampler not 2 x steps + 1."""
    _, dm, module, _ = _built(tmp_path)
    module.eval()
    tpl = dm.sample_template(5)
    tpl.pop("meta")
    net = module.network if hasattr(module, "network") else module.denoiser.net
    calls = []
    h = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        x = module.sample(tpl, steps=4, generator=torch.Generator().manual_seed(0))
    finally:
        h.remove()
    assert len(calls) == 2 * 4 + 1
    m = tpl["mask"]["frac"].bool()
    frac, lat = x["frac"], x["lattice"]
    real = frac[m]
    assert torch.isfinite(frac).all() and (real >= 0).all() and (real < 1).all()
    if (~m).any():
        assert (frac[~m] == 0).all()
    assert lat.shape == (5, 9) and torch.isfinite(lat).all()


def test_evaluate_through_the_cli_gives_finite_csp_metrics(tmp_path: Path) -> None:
    """Bugs: the diffusion path not handing the templates' meta records to crystal_metrics (CSP scored
    against the wrong test crystals, or a crash), metrics of the wrong task, NaN in the metrics."""
    run = tmp_path / "run"
    cfg = compose_config([EXP, f"run_dir={run}", *TINY])
    train(cfg)
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    metrics = evaluate(cfg)
    assert {"match_rate", "n", "n_matched", "built_fraction"} <= set(metrics)
    assert metrics["n"] == 6 and all(math.isfinite(v) for v in metrics.values())
    assert (run / "metrics.json").exists()

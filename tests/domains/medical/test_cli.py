"""The inverse task through the CLI: train a tiny slice prior, then `evaluate` with the experiment's
guidance writes mean / std / truth / posterior as NIfTI volumes with the test volume's affine and
scores the three views and the data residual."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nibabel")
pytest.importorskip("skimage")

from workbench.cli import compose_config, evaluate, train  # noqa: E402

from workbench.domains.medical.io import read_volume, stack_to_volume  # noqa: E402

TINY = ["datamodule.image_size=16", "datamodule.n_slices=8", "datamodule.n_train=2", "network.channels=8",
        "network.channel_mult=[1,2]", "network.attn_resolutions=[]", "network.mid_attention=false",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "sample.steps=3",
        "sample.plot=true"]


@pytest.mark.parametrize("guidance", ["diffusion_mbir", "data_consistency"])
def test_evaluate_writes_nifti_volumes_and_three_view_metrics(tmp_path: Path, monkeypatch, guidance: str) -> None:
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    cfg = compose_config(["experiment=medical/sv_ct_8_cpu", f"run_dir={tmp_path}", f"guidance={guidance}",
                          "sample.posterior_samples=2", *TINY])
    train(cfg)
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    metrics = evaluate(cfg)
    for key in ("psnr_axial", "psnr_coronal", "psnr_sagittal", "ssim_axial", "ssim_coronal", "ssim_sagittal",
                "data_residual", "posterior_std", "rmse"):
        assert isinstance(metrics[key], float), key
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["metrics"] == pytest.approx(metrics)
    samples = tmp_path / "samples"
    truth_pt = torch.load(samples / "truth" / "samples.pt", weights_only=True)
    assert truth_pt.shape == (8, 1, 16, 16)
    truth, rec = read_volume(samples / "truth" / "volume000.nii.gz")
    assert truth.shape == (16, 16, 8)
    torch.testing.assert_close(truth, stack_to_volume(truth_pt * 2000 - 1000), atol=1e-3, rtol=0)   # HU
    mean, rec_mean = read_volume(samples / "mean" / "volume000.nii.gz")
    assert np.array_equal(rec_mean["affine"], rec["affine"]) and rec["axcodes"] == "RAS"
    assert (samples / "std" / "volume000.nii.gz").exists()
    assert sorted(p.name for p in (samples / "posterior").glob("*.nii.gz")) == [
        "volume000_sample00.nii.gz", "volume000_sample01.nii.gz"]
    assert (tmp_path / "plots" / "posterior.png").exists()


def test_fast_experiment_samples_with_ddim_and_several_admm_iterations_per_step(tmp_path: Path, monkeypatch) -> None:
    """Bug: ``experiment=medical/sv_ct_8_fast`` falling back to the PC sampler, to its default time
    grid, or to one ADMM iteration per step (the fast mode's 200 NFE then lose 2-10 dB, README)."""
    import workbench.samplers as samplers
    from workbench.domains.medical import mbir

    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    seen: dict[str, list] = {"eta": [], "grid": [], "n_admm": []}
    real_ddim, real_call = samplers.sample_ddim, mbir.ADMMTVz.__call__

    def ddim(model, x, ts, **kw):
        seen["eta"].append(kw.get("eta"))
        seen["grid"].append(ts.clone())
        return real_ddim(model, x, ts, **kw)

    def call(self, x, t_next, prediction=None):
        seen["n_admm"].append(self.n_admm)
        return real_call(self, x, t_next, prediction)

    monkeypatch.setattr(samplers, "sample_ddim", ddim)
    monkeypatch.setattr(mbir.ADMMTVz, "__call__", call)
    cfg = compose_config(["experiment=medical/sv_ct_8_fast", f"run_dir={tmp_path}", "sample.posterior_samples=1",
                          *TINY, "datamodule.n_slices=8", "datamodule.n_train=1"])
    train(cfg)
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    metrics = evaluate(cfg)
    assert np.isfinite(metrics["psnr_axial"])
    assert seen["eta"] == [0.3]
    from workbench.samplers.common import sampler_grid
    from hydra.utils import instantiate

    process = instantiate(cfg.process)
    karras = sampler_grid(process, real_ddim, 3, spacing="karras")
    assert not torch.allclose(karras, sampler_grid(process, real_ddim, 3))     # the test can tell them apart
    torch.testing.assert_close(seen["grid"][0], karras)
    assert seen["n_admm"] and set(seen["n_admm"]) == {8}

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

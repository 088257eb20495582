"""VolumeDataModule: slices, templates, observations of the inverse tasks (y = A(truth)), the
conditional metrics, NIfTI outputs with the input's affine, plots, config errors."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel")
pytest.importorskip("skimage")

from workbench.errors import ConfigError  # noqa: E402

from workbench.domains.medical.data import VolumeDataModule, build_operator  # noqa: E402
from workbench.domains.medical.io import HUWindow, read_volume, stack_to_volume  # noqa: E402
from workbench.domains.medical.phantoms import shepp_logan_3d  # noqa: E402


def _dm(**kw) -> VolumeDataModule:
    args = dict(source="phantom", modality="ct", image_size=16, n_slices=8, n_train=2, n_test=2, batch_size=4)
    args.update(kw)
    dm = VolumeDataModule(**args)
    dm.setup("fit")
    return dm


def test_training_items_are_single_normalised_slices() -> None:
    dm = _dm()
    assert len(dm.train_set) == 2 * 8 and len(dm.test_set) == 2 * 8
    item = dm.train_set[0]
    assert set(item) == {"x"} and item["x"].shape == (1, 16, 16)
    x = dm.train_set.slices
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    # the first training volume is the phantom of seed gen_seed, through the HU window
    expected = HUWindow().normalise(shepp_logan_3d((8, 16, 16), "ct", seed=0)).unsqueeze(1)
    assert torch.equal(x[:8], expected)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 1, 16, 16)
    t = dm.sample_template(5)
    assert set(t) == {"x"} and t["x"].shape == (5, 1, 16, 16)
    assert dm.reference().shape == (16, 1, 16, 16)
    again = _dm()
    assert torch.equal(again.train_set.slices, x)                   # reproducible from the seeds


def test_mri_phantoms_are_divided_by_their_maximum() -> None:
    dm = _dm(modality="mri", phantom="ellipsoids")
    for v in dm.train_volumes:
        assert float(v["stack"].max()) == pytest.approx(1.0) and v["intensity"]["kind"] == "scale"


@pytest.mark.parametrize("task,kw,n_meas", [
    ("sv_ct", {"n_views": 4}, 4), ("la_ct", {"arc": 30.0, "angle_step": 2.0}, 15), ("cs_mri", {"acceleration": 4.0}, None)])
def test_observations_are_one_volume_per_batch_and_y_is_a_of_the_truth(task: str, kw: dict, n_meas) -> None:
    dm = _dm(task=task, **kw)
    batches = list(dm.observations(5, 3))
    assert len(batches) == 2                                           # min(n, n_test) volumes
    for i, b in enumerate(batches):
        x, obs, meta = b["x"], b["observation"], b["meta"]
        assert x.shape == (8, 1, 16, 16)
        assert torch.equal(x, dm.test_volumes[i]["stack"])
        op = build_operator(task, 16, **{**dm.op_kwargs, **kw})      # an operator built independently
        assert torch.allclose(obs["y"], op.forward(x), atol=1e-5)
        assert torch.allclose(obs["operator"].forward(x), op.forward(x))
        if n_meas is not None:
            assert obs["operator"].n_angles == n_meas
        assert len(meta) == 8 and [m["slice"] for m in meta] == list(range(8))
        assert all(m["volume"] == i and np.asarray(m["affine"]).shape == (4, 4) for m in meta)
        assert np.allclose(meta[0]["affine"], dm.test_volumes[i]["meta"]["affine"])


def test_noise_std_adds_seeded_measurement_noise() -> None:
    dm = _dm(task="sv_ct", n_views=8, noise_std=0.05)
    b1 = next(iter(dm.observations(1, 1)))
    b2 = next(iter(dm.observations(1, 1)))
    r = b1["observation"]["y"] - b1["observation"]["operator"].forward(b1["x"])
    assert float(r.std()) == pytest.approx(0.05, rel=0.1) and torch.equal(b1["observation"]["y"], b2["observation"]["y"])
    assert b1["observation"]["operator"].noise_std == 0.05


def test_conditional_metrics_score_three_views_and_the_data_residual() -> None:
    dm = _dm(task="cs_mri")
    batches = list(dm.observations(2, 1))
    truth = torch.cat([b["x"] for b in batches])
    samples = torch.stack([truth, truth])
    m = dm.conditional_metrics(truth, truth, samples)
    assert math.isinf(m["psnr_axial"]) and m["ssim_sagittal"] == pytest.approx(1.0)
    assert m["data_residual"] == pytest.approx(0.0, abs=1e-6) and m["posterior_std"] == 0.0
    g = torch.Generator().manual_seed(0)
    noisy = truth + 0.05 * torch.randn(truth.shape, generator=g)
    m = dm.conditional_metrics(noisy, truth, torch.stack([noisy, truth]))
    assert 20 < m["psnr_axial"] < 30 and 0 < m["data_residual"] < 1 and m["posterior_std"] > 0
    for key in ("rmse", "mae", "coverage_2std", "mean_std", "ssim_axial", "psnr_coronal", "psnr_sagittal"):
        assert isinstance(m[key], float)
    # the residual is each volume's own: score against a swapped measurement and it grows
    dm._observed = [dm._observed[1], dm._observed[0]]
    assert dm.conditional_metrics(truth, truth, samples)["data_residual"] > 0.01
    with pytest.raises(ConfigError, match="observations"):
        dm.conditional_metrics(truth[:8], truth[:8], samples[:, :8])


def test_save_samples_writes_each_volume_with_the_input_affine(tmp_path: Path) -> None:
    """As cli._conditional calls it: mean / std / truth with one record per slice, the posterior
    observation-major (slice i, sample s at i * S + s) with the records repeated."""
    dm = _dm(task="cs_mri")
    batches = list(dm.observations(2, 1))
    truth = torch.cat([b["x"] for b in batches])
    meta = [m for b in batches for m in b["meta"]]
    files = dm.save_samples(truth, tmp_path / "truth", meta=meta)
    assert sorted(p.name for p in files) == ["samples.pt", "volume000.nii.gz", "volume001.nii.gz"]
    for v in range(2):
        vol, rec = read_volume(tmp_path / "truth" / f"volume{v:03d}.nii.gz")
        assert np.array_equal(rec["affine"], np.asarray(dm.test_volumes[v]["meta"]["affine"], dtype=np.float32))
        hu = stack_to_volume(shepp_logan_3d((8, 16, 16), "ct", seed=2 + v).unsqueeze(1))   # seeds n_train + v
        assert torch.allclose(vol, hu, atol=1e-3)                      # back in HU
    std = torch.full_like(truth, 0.01)
    dm.save_samples(std, tmp_path / "std", meta=meta)
    s, _ = read_volume(tmp_path / "std" / "volume000.nii.gz")
    assert torch.allclose(s, torch.full_like(s, 20.0), atol=1e-3)      # a spread: 0.01 of the 2000 HU window
    S = 3
    post = torch.stack([truth + k for k in range(S)], 1).reshape(-1, *truth.shape[1:])   # i * S + s
    files = dm.save_samples(post, tmp_path / "posterior", meta=[m for m in meta for _ in range(S)])
    assert len(files) == 1 + 2 * S
    for k in range(S):
        vol, _ = read_volume(tmp_path / "posterior" / f"volume001_sample{k:02d}.nii.gz")
        hu = stack_to_volume(shepp_logan_3d((8, 16, 16), "ct", seed=3).unsqueeze(1))
        assert torch.allclose(vol, hu + 2000.0 * k, atol=2e-3)


def test_unconditional_samples_are_written_as_a_stack(tmp_path: Path) -> None:
    dm = _dm()
    x = torch.rand(5, 1, 16, 16)
    files = dm.save_samples(x, tmp_path)
    vol, rec = read_volume(tmp_path / "samples.nii.gz")
    assert vol.shape == (16, 16, 5) and {p.name for p in files} == {"samples.pt", "samples.nii.gz"}
    assert torch.allclose(vol, stack_to_volume(HUWindow().denormalise(x)), atol=1e-3)


def test_plots_are_written_without_pyplot(tmp_path: Path) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    dm = _dm(task="cs_mri")
    assert dm.plot_samples(torch.rand(6, 1, 16, 16), tmp_path / "u.png").exists()
    batches = list(dm.observations(1, 1))
    post = torch.cat([batches[0]["x"]] * 2)
    assert dm.plot_samples(post, tmp_path / "p.png").exists()
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


@pytest.mark.parametrize("kw,key", [({"task": "ct"}, "datamodule.task"), ({"source": "dicom"}, "datamodule.source"),
                                    ({"modality": "pet"}, "datamodule.modality"),
                                    ({"image_size": 4}, "datamodule.image_size"),
                                    ({"window_lo": 100, "window_hi": 0}, "datamodule.window_hi")])
def test_bad_config_values_name_their_key(kw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        VolumeDataModule(**kw)


def test_observations_need_a_task() -> None:
    dm = _dm()
    with pytest.raises(ConfigError, match="datamodule.task"):
        next(iter(dm.observations(1, 1)))


def test_nifti_source_trains_outside_the_central_test_block(medical_file, monkeypatch) -> None:
    path = medical_file("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    dm = VolumeDataModule(source="nifti", modality="mri", image_size=32, n_slices=None, test_slices=12, batch_size=4)
    dm.setup()
    nz = round(189 * 32 / 197)
    assert len(dm.test_set) == 12 and len(dm.train_set) == nz - 12
    assert float(dm.train_set.slices.max()) <= 1.0 and float(dm.test_set.slices.max()) == pytest.approx(1.0, abs=0.05)
    test = dm.test_volumes[0]
    lo = (nz - 12) // 2
    # the test block's affine puts its slice 0 where slice lo of the whole resampled volume is
    whole = dm.train_volumes[0]["meta"]["affine"]
    assert np.allclose(np.asarray(test["meta"]["affine"]) @ [0, 0, 0, 1], np.asarray(whole) @ [0, 0, lo, 1])
    assert test["meta"]["axcodes"] == "RAS" and test["meta"]["source"] == str(path.resolve())
    # the resampled volume spans the same field of view (centres of the corner voxels within a voxel)
    vol, meta = read_volume(path)
    far = np.asarray(meta["affine"]) @ [196, 232, 188, 1]
    assert np.allclose(np.asarray(whole) @ [31, 31, nz - 1, 1], far, atol=max(197 / 32, 233 / 32))


def test_missing_nifti_is_a_clear_file_not_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    dm = VolumeDataModule(source="nifti", modality="mri")
    with pytest.raises(FileNotFoundError, match="WORKBENCH_DATA"):
        dm.setup()

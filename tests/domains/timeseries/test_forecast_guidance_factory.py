"""TSDiff's guided forecasts go through the core's ``self_guidance`` factory (the config group
``guidance``) and give exactly the forecasts of the hand-built wrapper they replaced."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pandas")

from workbench.domains.timeseries import forecast as fmod  # noqa: E402
from workbench.domains.timeseries.forecast import TSDiff, quantile_levels  # noqa: E402
from workbench.guidance import SelfGuidance, sample_self_guided_ddpm  # noqa: E402
from workbench.samplers import sample_ddim  # noqa: E402

from .test_forecast import C, P, _entry, _Module  # noqa: E402


def _old_energy(y, m, kind, q):
    """The energy exactly as forecast.observation_energy wrote it before the factory."""
    if kind == "mse":
        return lambda x0: ((x0 - y) ** 2 * m).flatten(1).sum(1)
    qq = q.reshape(-1, *([1] * (y.ndim - 1)))
    return lambda x0: (torch.maximum(qq * (y - x0), (qq - 1) * (y - x0)) * m).flatten(1).sum(1)


def _hand_built(model: TSDiff, entries, *, guidance, scale, num_samples, sampler, steps, seed, batch_size,
                missing, n_missing) -> np.ndarray:
    """The pre-factory TSDiff.predict loop: SelfGuidance / sample_self_guided_ddpm built by hand."""
    module, process = model.module, model.module.process
    y_all, m_all, sc_all = model.observe(entries, missing, n_missing, seed)
    out = np.zeros((len(entries), num_samples, P), dtype=np.float32)
    g = torch.Generator().manual_seed(seed)
    for sl in model._chunks(len(entries), num_samples, batch_size):
        k = sl.stop - sl.start
        y = y_all[sl].repeat_interleave(num_samples, 0)
        m = m_all[sl].repeat_interleave(num_samples, 0)
        q = quantile_levels(k, num_samples) if guidance == "quantile" else None
        energy = _old_energy(y, m, guidance, q)
        geometry = module.geometry.bind(None)
        x = process.prior_sample(y, geometry, generator=g)
        if sampler == "ddpm":
            ts = process.time_grid(process.steps - 1)
            x0 = sample_self_guided_ddpm(module.denoiser, x, ts, process=process, geometry=geometry, energy=energy,
                                         scale=scale, generator=g)
        else:
            ts = process.time_grid(steps, spacing="time")
            x0 = sample_ddim(SelfGuidance(module.denoiser, energy, scale), x, ts, process=process, geometry=geometry,
                             eta=0.0, generator=g)
        out[sl] = (x0[:, C:, 0].reshape(k, num_samples, P) * sc_all[sl, None, None]).numpy()
    return out


@pytest.mark.parametrize("sampler,guidance", [("ddpm", "mse"), ("ddpm", "quantile"), ("ddim", "mse"),
                                              ("ddim", "quantile")])
def test_factory_forecasts_equal_the_hand_built_wrapper(sampler: str, guidance: str) -> None:
    """Bugs: the factory dropping the quantile levels, the scale or the observation mask, or the
    DDPM step form using other than the factory's energy and scale. Bit-identical forecasts for a
    fixed seed (three series, two chunks, missing context values for quantile guidance)."""
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    entries = [_entry(1.5), _entry(0.5), _entry(1.2)]
    kw = dict(guidance=guidance, scale=4.0, num_samples=6, sampler=sampler, steps=20 if sampler == "ddim" else None,
              seed=3, batch_size=12, missing="RM" if guidance == "quantile" else None, n_missing=2)
    fc = model.predict(entries, progress=False, **kw)
    np.testing.assert_array_equal(fc.samples, _hand_built(model, entries, **kw))


def test_predict_builds_its_guidance_with_the_config_groups_factory(monkeypatch) -> None:
    """The factory TSDiff calls is the self_guidance config's target, called once per chunk with
    the chunk's observation batch."""
    from hydra.utils import get_class

    from workbench.cli import compose_config

    target = get_class(compose_config(["guidance=self_guidance"]).guidance["_target_"])
    calls = []

    class Spy(target):
        def __call__(self, denoiser, batch, generator=None):
            calls.append((self.scale, self.energy, batch["observation"]["y"].shape))
            return super().__call__(denoiser, batch, generator)

    monkeypatch.setattr(fmod, "SelfGuidanceFactory", Spy)
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    model.predict([_entry(1.5), _entry(0.5)], guidance="quantile", scale=2.5, num_samples=4, sampler="ddim",
                  steps=5, batch_size=4, progress=False)
    assert calls == [(2.5, "quantile", (4, C + P, 1))] * 2


def test_observations_are_tsdiffs_windows_and_the_metrics_score_the_horizon() -> None:
    """Bugs: the generic loop's observations differing from what TSDiff.predict conditions on
    (horizon not hidden, another scale), or the conditional metrics scoring the observed context
    instead of the horizon. y and obs_mask equal TSDiff.observe; the truth's horizon is the test
    series' last P values over the context scale; a posterior equal to the truth on the horizon
    but wrong on the context scores 0."""
    from workbench.domains.timeseries.data import TimeSeriesDataModule

    dm = TimeSeriesDataModule("synthetic", context_length=48, use_lags=True)
    dm.setup("fit")
    batches = list(dm.observations(5, 3))
    assert [len(b["x"]) for b in batches] == [3, 2]
    entries = list(dm.dataset.test)[:5]
    y, m, sc = TSDiff.from_datamodule(None, dm).observe(entries)
    torch.testing.assert_close(torch.cat([b["observation"]["y"] for b in batches]), y)
    torch.testing.assert_close(torch.cat([b["observation"]["obs_mask"] for b in batches]), m)
    truth = torch.cat([b["x"] for b in batches])
    Pn = dm.prediction_length
    horizon = np.stack([s.target[len(s) - Pn:] for s in entries]) / sc.numpy()[:, None]
    np.testing.assert_allclose(truth[:, 48:, 0].numpy(), horizon, rtol=1e-5)
    samples = truth.expand(4, *truth.shape).clone()
    samples[:, :, :48] += 5.0
    out = dm.conditional_metrics(samples.mean(0), truth, samples)
    assert out["rmse"] == pytest.approx(0.0, abs=1e-6) and out["scaled/CRPS"] == pytest.approx(0.0, abs=1e-6)

"""Predict / refine / synthesize on a model whose answer is known: an exact Gaussian denoiser
for AR(1) windows, and the tiny adapter for the plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pd = pytest.importorskip("pandas")

from workbench.domains.timeseries.baselines import RidgeForecaster, seasonal_naive, seasonality  # noqa: E402
from workbench.domains.timeseries.forecast import (  # noqa: E402
    Forecast, TSDiff, linear_predictive_score, missing_positions, observation_energy, quantile_levels,
)
from workbench.domains.timeseries.io import TimeSeries  # noqa: E402
from workbench.geometry import Euclidean  # noqa: E402
from workbench.precond import Prediction  # noqa: E402
from workbench.processes import DiscreteDDPM  # noqa: E402
from workbench.testing import GaussianDenoiser  # noqa: E402

C, P, RHO, MU = 8, 4, 0.8, 1.0


class _WindowGaussian(nn.Module):
    """Exact denoiser of windows [B, L, 1] distributed as a stationary AR(1) with mean MU."""

    def __init__(self, process) -> None:
        super().__init__()
        L = C + P
        i = torch.arange(L, dtype=torch.float64)
        cov = 0.1 * RHO ** (i[:, None] - i[None, :]).abs()
        self.g = GaussianDenoiser(process, torch.full((L,), MU, dtype=torch.float64), cov)
        self.process = process

    def forward(self, x, t, geometry, **extras) -> Prediction:
        p = self.g(x[..., 0], t, Euclidean(), **extras)
        return Prediction(p.x0[..., None], p.eps[..., None], self.process.at(t, x, geometry))


class _Module(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.process = DiscreteDDPM(100, "linear", 1e-4, 0.1)
        self.denoiser = _WindowGaussian(self.process)
        self.geometry = Euclidean()
        self.dummy = nn.Parameter(torch.zeros(1))


def _entry(context_end: float) -> TimeSeries:
    ctx = np.ones(C)
    ctx[-2:] = [2 - context_end, context_end]          # context mean stays 1, so the scale is 1
    return TimeSeries(np.concatenate([ctx, np.full(P, np.nan)]), pd.Timestamp("2020-01-01"), "h", f"e{context_end}")


def test_energies_levels_and_missing_positions() -> None:
    y, m = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    assert observation_energy(y, m, "mse")(torch.tensor([[3.0, 0.0]])).item() == 4.0
    q = torch.tensor([0.9])
    # e = y - x0 = -2 at the observed entry -> max(0.9 * -2, -0.1 * -2) = 0.2
    assert observation_energy(y, m, "quantile", q)(torch.tensor([[3.0, 0.0]])).item() == pytest.approx(0.2)
    torch.testing.assert_close(quantile_levels(2, 3), torch.tensor([0.25, 0.5, 0.75, 0.25, 0.5, 0.75]))
    rng = np.random.default_rng(0)
    assert list(missing_positions("BM-B", 10, 3, rng)) == [0, 1, 2]
    assert list(missing_positions("BM-E", 10, 3, rng)) == [7, 8, 9]
    rm = missing_positions("RM", 10, 4, rng)
    assert len(set(rm)) == 4 and rm.max() < 10
    with pytest.raises(ValueError, match="RM"):
        missing_positions("XX", 10, 3, rng)


def test_observation_hides_the_horizon_and_the_missing_context() -> None:
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    y, m, sc = model.observe([_entry(1.2)])
    assert y.shape == (1, C + P, 1) and float(sc[0]) == pytest.approx(1.0)
    assert m[0, :C, 0].all() and not m[0, C:, 0].any()
    for kind, hidden in (("BM-B", [0, 1, 2]), ("BM-E", [5, 6, 7])):
        _, m, _ = model.observe([_entry(1.2)], missing=kind, n_missing=3)
        assert torch.nonzero(m[0, :C, 0] == 0).flatten().tolist() == hidden
    _, m, _ = model.observe([_entry(1.2)], missing="RM", n_missing=3, seed=4)
    assert int((m[0, :C, 0] == 0).sum()) == 3
    with pytest.raises(ValueError, match="needs context"):
        model.observe([TimeSeries(np.ones(5), pd.Timestamp("2020-01-01"), "h", "short")])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_guided_forecast_follows_the_ar1_conditional(sampler: str) -> None:
    """Forecasts after a context ending high (1.5) lie above those after one ending low (0.5),
    by about the AR(1) conditional mean's difference rho^k (1.5 - 0.5) once the guidance is
    strong enough (guidance by the one-step estimate is approximate: at scale 4 the gap is about
    a sixth of it, at 40 within 0.7..1.4 of it), and the gap grows with the scale."""
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    entries = [_entry(1.5), _entry(0.5)]
    expected = RHO ** np.arange(1, P + 1) * 1.0
    gaps = []
    for scale in (4.0, 40.0):
        fc = model.predict(entries, guidance="mse", scale=scale, num_samples=64, sampler=sampler,
                           steps=50 if sampler == "ddim" else None, seed=0, progress=False)
        gaps.append(fc.mean[0] - fc.mean[1])
    assert np.all(gaps[1] > gaps[0]) and np.all(gaps[0] > 0)
    assert np.all(gaps[1] > 0.7 * expected) and np.all(gaps[1] < 1.4 * expected), (gaps[1], expected)
    # quantile guidance: the k-th sample is pulled to level k / (N + 1): spread in order
    fq = model.predict(entries, guidance="quantile", scale=4.0, num_samples=32, sampler=sampler,
                       steps=50 if sampler == "ddim" else None, seed=1, progress=False)
    lo, hi = fq.samples[:, :8, 0].mean(), fq.samples[:, -8:, 0].mean()
    assert hi > lo
    assert fq.info["nfe"] == (199 if sampler == "ddpm" else 51)


def test_diverging_guidance_raises_a_clear_error() -> None:
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    with pytest.raises(FloatingPointError, match=r"diverged.*'e1.5'.*scale \(1e\+30\)"):
        model.predict([_entry(1.5)], guidance="mse", scale=1e30, num_samples=4, sampler="ddim", steps=10,
                      progress=False)


def test_forecast_frame_plot_and_metrics(tmp_path) -> None:
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    entries = [_entry(1.2)]
    entries_true = [TimeSeries(np.concatenate([entries[0].target[:C], [1.1, 1.0, 1.0, 1.0]]), entries[0].start, "h", "e")]
    fc = model.predict(entries, num_samples=8, sampler="ddim", steps=10, missing="BM-E", n_missing=2, progress=False)
    df = fc.to_frame()
    assert list(df.columns) == ["series", "timestamp", "mean", "q0.1", "q0.5", "q0.9"] and len(df) == P
    assert df["timestamp"].iloc[0] == pd.Timestamp("2020-01-01 08:00")
    assert set(fc.metrics(entries_true)) >= {"CRPS", "ND", "NRMSE"}
    fc.plot(entries_true, tmp_path / "fan.png")
    assert (tmp_path / "fan.png").stat().st_size > 1000


def test_sampler_steps_are_explicit() -> None:
    """ddpm runs the discrete process's own T steps (no assumed T for a process without them, no
    ignored steps=); ddim needs its step count."""
    from workbench.processes import VP

    entries = [_entry(1.2)]
    model = TSDiff(_Module(), context_length=C, prediction_length=P, freq="h", use_lags=False)
    with pytest.raises(ValueError, match="ddim.*needs steps"):
        model.predict(entries, sampler="ddim", num_samples=2, progress=False)
    with pytest.raises(ValueError, match="runs all 100 steps"):
        model.predict(entries, sampler="ddpm", steps=20, num_samples=2, progress=False)
    with pytest.raises(ValueError, match="sampler must be"):
        model.predict(entries, sampler="euler", num_samples=2, progress=False)  # type: ignore[arg-type]
    continuous = _Module()
    continuous.process = VP()
    with pytest.raises(ValueError, match="VP has none"):
        TSDiff(continuous, context_length=C, prediction_length=P, freq="h", use_lags=False).predict(
            entries, sampler="ddpm", num_samples=2, progress=False)
    fc = model.predict(entries, sampler="ddpm", num_samples=2, progress=False)
    assert fc.info["nfe"] == 2 * 99 + 1


class _KnownLoss(nn.Module):
    """A denoiser that knows the clean batch: its eps is the true noise plus (i / 10) at DDPM
    step i, so the denoising loss at step i is exactly (i / 10)^2."""

    def __init__(self, process, x0) -> None:
        super().__init__()
        self.process, self.x0 = process, x0
        self.seen: list[int] = []

    def forward(self, x, t, geometry, **extras) -> Prediction:
        coef = self.process.at(t, x, geometry)
        eps = (x - coef.alpha * self.x0) / coef.sigma
        i = torch.round(t * self.process.steps).to(x.dtype) - 1      # DDPM step i sits at t = (i + 1) / T
        self.seen += sorted(set(i.long().tolist()))
        return Prediction(self.x0.expand_as(x), eps + i[:, None, None] / 10, coef)


def test_best_diffusion_step_is_the_one_whose_loss_is_closest_to_the_mean() -> None:
    """Losses (i / 10)^2 over i = 0..99 have mean 32.835; the closest is step 57 (32.49)."""
    module = _Module()
    batch = torch.randn(4, C + P, 1)
    module.denoiser = _KnownLoss(module.process, batch)
    model = TSDiff(module, context_length=C, prediction_length=P, freq="h", use_lags=False)
    assert model.best_diffusion_step(batch) == 57
    assert module.denoiser.seen == list(range(100))      # each of the process's steps, once


@pytest.mark.parametrize("method", ["ml", "lmc"])
def test_refinement_follows_the_expected_gradient_flow(method: str) -> None:
    """With the exact Gaussian denoiser, eps_hat(x) = s M (x - a mu) with M = (a^2 Sigma + s^2 I)^-1,
    so the expected energy gradient at the fixed step is 2 a^2 s^2 M^2 (y - mu) plus the MSE
    regulariser's 2 w m (y - obs); the noise of ML (fresh eps) and of LMC is zero-mean, so the
    mean over samples follows y <- y - eta E[grad] from the base forecast, computed here by hand."""
    module = _Module()
    model = TSDiff(module, context_length=C, prediction_length=P, freq="h", use_lags=False)
    entries = [_entry(1.5)]                                   # context ends 0.5, 1.5; scale 1
    base = np.full((1, 1, P), 3.0, dtype=np.float32)
    step, eta, iterations, w = 10, 0.02, 60, 1.0
    r = model.refine(entries, base, method=method, guidance="mse", iterations=iterations, step_size=eta,
                     weight=w, num_samples=256, step=step, progress=False)
    assert r.samples.shape == (1, 256, P) and r.info["step"] == step

    obs = torch.from_numpy(np.concatenate([entries[0].target[:C], np.zeros(P)])).double()
    mask = torch.cat([torch.ones(C), torch.zeros(P)]).double()
    g = module.denoiser.g
    t = torch.tensor([(step + 1) / module.process.steps])
    coef = module.process.at(t, torch.zeros(1, C + P), Euclidean())
    a, s = float(coef.alpha.flatten()[0]), float(coef.sigma.flatten()[0])
    M = torch.linalg.inv(a**2 * g.cov + s**2 * torch.eye(C + P, dtype=torch.float64))
    H = 2 * a**2 * s**2 * M @ M
    y = obs.clone()
    y[C:] = 3.0
    for _ in range(iterations):
        y = y - eta * (H @ (y - g.mean) + 2 * w * mask * (y - obs))
    expected = y[C:].numpy()
    got = r.samples[0].mean(0)
    assert np.abs(got - expected).max() < 0.03, (got, expected)
    assert np.all(np.abs(expected - 1.0) < 0.5 * np.abs(3.0 - 1.0))   # and it did move far towards mu


def test_baselines_and_lps() -> None:
    t = np.arange(24 * 20, dtype=np.float32)
    s = TimeSeries(10 + np.sin(2 * np.pi * t / 24), pd.Timestamp("2020-01-01"), "h", "sin")
    assert seasonality("H") == 24 and seasonality("B") == 5 and seasonality("D") == 1
    sn = seasonal_naive([s], 24)
    np.testing.assert_allclose(sn[0, 0], s.target[-24:], atol=1e-5)   # a pure 24-periodic series
    rf = RidgeForecaster(48, 24, num_train_samples=200).fit([s])
    pred = rf.predict([s])
    assert pred.shape == (1, 1, 24) and np.abs(pred[0, 0] - s.target[-24:]).max() < 0.05
    # synthetic windows that are exactly the real pattern give a near-perfect LPS; noise does not
    windows = np.stack([s.target[i: i + 72] / np.abs(s.target[i: i + 48]).mean() for i in range(0, 300, 7)])
    good = linear_predictive_score(windows, [s], 48, 24)["CRPS"]
    noise = np.random.default_rng(0).normal(1.0, 0.3, windows.shape)
    bad = linear_predictive_score(noise, [s], 48, 24)["CRPS"]
    assert good < 0.02 and bad > 3 * good, (good, bad)


def test_tiny_adapter_end_to_end() -> None:
    import pytorch_lightning as pl

    from workbench.domains.timeseries import adapter

    a = adapter()
    module = a.module()
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module, datamodule=a.datamodule)
    model = TSDiff.from_datamodule(module, a.datamodule)
    test = a.datamodule.dataset.test[:2]
    fc = model.predict(test, num_samples=4, sampler="ddim", steps=5, progress=False)
    assert fc.samples.shape == (2, 4, 24) and np.isfinite(fc.samples).all()
    syn = model.synthesize(5, progress=False)
    assert syn.shape == (5, 72)
    assert isinstance(fc, Forecast)


def test_forecast_validation_keeps_the_best_checkpoint(tmp_path) -> None:
    import pytorch_lightning as pl

    from workbench.domains.timeseries import adapter
    from workbench.domains.timeseries.validation import ForecastValidation
    from workbench.lit import AtomicCheckpointIO, load_checkpoint

    a = adapter()
    module = a.module()
    val = ForecastValidation(every_n_epochs=1, num_samples=4, max_series=3, dirpath=str(tmp_path))
    pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[val], plugins=[AtomicCheckpointIO()],
               num_sanity_val_steps=0).fit(module, datamodule=a.datamodule)
    crps = [h["crps"] for h in val.history]
    assert [h["epoch"] for h in val.history] == [0, 1, 2] and np.isfinite(crps).all()
    assert val.best == min(crps) and val.best_epoch == int(np.argmin(crps))
    ckpt = load_checkpoint(tmp_path / "best.ckpt")
    assert ckpt["epoch"] == val.best_epoch
    assert ckpt["callbacks"]["ForecastValidation"]["best"] == val.best   # a resumed run keeps comparing to it
    with pytest.raises(ValueError, match="every_n_epochs"):
        ForecastValidation(every_n_epochs=0)
    # the EMA average is validated when asked, and asking without the EMA callback is an error
    from workbench.lit import EMA

    for callbacks in ([EMA(0.9)], []):
        val = ForecastValidation(every_n_epochs=1, num_samples=2, max_series=2, dirpath=str(tmp_path / "ema"),
                                 use_ema=True)
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[*callbacks, val], num_sanity_val_steps=0)
        if callbacks:
            trainer.fit(a.module(), datamodule=a.datamodule)
            assert len(val.history) == 1 and (tmp_path / "ema" / "best.ckpt").exists()
        else:
            with pytest.raises(ValueError, match="EMA callback"):
                trainer.fit(a.module(), datamodule=a.datamodule)

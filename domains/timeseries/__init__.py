"""Time series: TSDiff (Kollovieh et al., NeurIPS 2023), an unconditional diffusion model over
forecast windows, used to predict (observation self-guidance), refine base forecasts and
synthesize training data. See README.md in this folder."""
from __future__ import annotations

__all__ = ["adapter"]


def adapter(n_series: int = 8):
    """A small adapter on the embedded synthetic series (no download) for the conformance test
    and notebooks: context 48, horizon 24, hidden 16, 1 block, T = 100."""
    from workbench.adapter import DomainAdapter
    from workbench.processes import DiscreteDDPM

    from .data import TimeSeriesDataModule, synthetic_dataset
    from .geometry import series_geometry
    from .metrics import WindowMetrics
    from .networks import TSDiffNetwork

    ds = synthetic_dataset(n_series=n_series, length=24 * 14)
    dm = TimeSeriesDataModule(ds, context_length=48, use_lags=False, batch_size=8, batches_per_epoch=2)
    return DomainAdapter(
        datamodule=dm,
        geometry=series_geometry(),
        network=TSDiffNetwork(input_dim=dm.input_dim, hidden_dim=16, num_blocks=1, step_emb=32, d_state=16),
        metrics=WindowMetrics(prediction_length=24, max_lag=12),
        process=DiscreteDDPM(100, "linear", 1e-4, 0.1),
        prediction="eps",
    )

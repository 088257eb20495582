"""Figures: forecast fan charts and synthetic windows next to real ones."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["fan_chart", "plot_windows"]


def fan_chart(forecast: Any, entries: Sequence[Any], path: str | os.PathLike | None = None, *,
              max_series: int = 6, history: int | None = None) -> Any:
    """One panel per series: recent history and the true horizon (black), the median (blue)
    and the 50 % / 90 % central intervals of the samples. Returns the figure (saved and closed
    if ``path``)."""
    import matplotlib.pyplot as plt

    n = min(len(entries), max_series)
    P = forecast.samples.shape[-1]
    history = history or 4 * P
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    for i in range(n):
        ax = axes[i // cols][i % cols]
        s = entries[i]
        h = min(history, len(s))
        idx = s.index(len(s) - h, h)
        ax.plot(idx, s.target[len(s) - h:], color="k", lw=1, label="observed")
        fidx = forecast.index[i]
        for lo, hi, a in ((0.05, 0.95, 0.2), (0.25, 0.75, 0.4)):
            ax.fill_between(fidx, forecast.quantile(lo)[i], forecast.quantile(hi)[i], color="C0", alpha=a, lw=0,
                            label=f"{int(round((hi - lo) * 100))} % interval")
        ax.plot(fidx, forecast.quantile(0.5)[i], color="C0", lw=1.2, label="median")
        ax.set_title(str(forecast.item_ids[i]), fontsize=9)
        ax.tick_params(labelsize=7)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7, loc="upper left")
    title = forecast.info.get("method", "forecast")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        from workbench.data import save_figure

        save_figure(fig, path, dpi=90)
        plt.close(fig)
    return fig


def plot_windows(samples: Any, reference: Any, path: str | os.PathLike, *, context_length: int | None = None,
                 n: int = 4) -> Path:
    """Synthetic (bottom) and real (top) windows, target channel, mean-scaled units."""
    import matplotlib.pyplot as plt

    from workbench.data import save_figure

    s = np.asarray(samples[..., 0].detach().cpu() if hasattr(samples, "detach") else samples[..., 0])
    r = np.asarray(reference[..., 0].detach().cpu() if hasattr(reference, "detach") else reference[..., 0])
    n = min(n, len(s), len(r))
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 4), squeeze=False)
    for row, (data, name) in enumerate(((r, "real"), (s, "generated"))):
        for j in range(n):
            ax = axes[row][j]
            ax.plot(data[j], lw=0.8, color="k" if row == 0 else "C0")
            if context_length:
                ax.axvline(context_length, color="gray", lw=0.6, ls="--")
            ax.set_title(f"{name} {j}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=90)
    plt.close(fig)
    return out

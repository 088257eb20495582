"""The core's own toy domain: a 2-D Gaussian mixture (8 modes on a circle).

Used by ``workbench demo`` until domains land, by the sampler benchmark and by the
conformance test. Everything is generated; nothing is downloaded.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data import DomainDataModule, save_figure
from .metrics import moment_errors, sliced_wasserstein
from .nn import SinusoidalEmbedding  # re-exported: it lived here before workbench.nn
from .state import State

__all__ = ["gaussian_mixture", "GaussianMixtureDataModule", "ToyMLP", "SinusoidalEmbedding", "toy_metrics", "adapter"]


def gaussian_mixture(n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.25,
                     seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` points of an equal-weight mixture of ``n_modes`` isotropic Gaussians on a circle.

    Returns (points [n, 2], mode labels [n]).
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_modes, (n,), generator=g)
    angle = 2 * math.pi * labels.float() / n_modes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + std * torch.randn(n, 2, generator=g), labels


class _PointSet(Dataset):
    def __init__(self, x: Tensor, labels: Tensor, conditional: bool) -> None:
        self.x, self.labels, self.conditional = x, labels, conditional

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"x": self.x[i]}
        if self.conditional:
            item["cond"] = self.labels[i]
        return item


class GaussianMixtureDataModule(DomainDataModule):
    """Train / val / test splits of :func:`gaussian_mixture` (different seeds per split).

    Args:
        n_train, n_val, n_test: split sizes.
        conditional: also yield the mode label as ``cond`` (for classifier-free guidance).
        observation: what :meth:`observations` measures of a test point, for conditional sampling
            (``workbench evaluate guidance=...``): ``"inpaint"`` coordinate 0 exactly (a
            :class:`~workbench.operators.Mask`; infer coordinate 1), or ``"noisy"`` both coordinates
            with Gaussian noise of std ``observation_noise`` (an identity Mask with that noise_std).
    """

    OBSERVATIONS = ("inpaint", "noisy")

    def __init__(self, n_train: int = 8192, n_val: int = 1024, n_test: int = 4096, n_modes: int = 8,
                 radius: float = 2.0, std: float = 0.25, conditional: bool = False, batch_size: int = 256,
                 num_workers: int = 0, seed: int = 0, observation: str = "inpaint",
                 observation_noise: float = 0.5) -> None:
        from .errors import ConfigError, check_number

        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.sizes = (int(n_train), int(n_val), int(n_test))
        self.mix = dict(n_modes=n_modes, radius=radius, std=std)
        self.conditional = conditional
        if observation not in self.OBSERVATIONS:
            raise ConfigError(f"config key 'datamodule.observation' must be one of {', '.join(self.OBSERVATIONS)}, "
                              f"got {observation!r}")
        self.observation = observation
        self.observation_noise = float(check_number(observation_noise, "datamodule.observation_noise", minimum=0.0,
                                                    exclusive_minimum=True))

    def setup(self, stage: str | None = None) -> None:
        sets = []
        for i, n in enumerate(self.sizes):
            x, y = gaussian_mixture(n, seed=self.seed * 10 + i, **self.mix)
            sets.append(_PointSet(x, y, self.conditional))
        self.train_set, self.val_set, self.test_set = sets

    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"x": torch.zeros(n, 2)}
        if self.conditional:
            out["cond"] = torch.randint(0, self.mix["n_modes"], (n,), generator=generator)
        return out

    def reference(self) -> Tensor:
        if not hasattr(self, "test_set") or self.test_set is None:
            self.setup()
        return self.test_set.x

    def observations(self, n: int, batch_size: int) -> Iterator[dict[str, Any]]:
        """The first ``n`` test points as (observation, truth) pairs (see ``observation``)."""
        from .operators import Mask

        if not hasattr(self, "test_set") or self.test_set is None:
            self.setup()
        x_all, labels = self.test_set.x[:n], self.test_set.labels[:n]
        g = torch.Generator().manual_seed(self.seed * 10 + 7)
        noise = torch.randn(x_all.shape, generator=g)
        for i in range(0, len(x_all), batch_size):
            x = x_all[i:i + batch_size]
            if self.observation == "inpaint":
                op = Mask(torch.tensor([1.0, 0.0]).expand_as(x).clone())
                y = op.forward(x)
            else:
                op = Mask(torch.ones_like(x), noise_std=self.observation_noise)
                y = x + self.observation_noise * noise[i:i + batch_size]
            batch: dict[str, Any] = {"x": x, "observation": {"y": y, "operator": op, "obs_mask": op.mask}}
            if self.conditional:
                batch["cond"] = labels[i:i + batch_size]
            yield batch

    def conditional_metrics(self, mean: State, truth: State, samples: State) -> dict[str, float]:
        """The default scores, plus those of the inferred coordinate 1 alone for ``inpaint``
        (``hidden/...``) and ``baseline_rmse``: the error of the training mean as the estimate
        (of coordinate 1 for ``inpaint``), the unconditional reference to beat."""
        from .conditional import default_metrics

        out = default_metrics(mean, truth, samples)
        prior = self.train_set.x.mean(0)
        cols = [1] if self.observation == "inpaint" else [0, 1]
        if self.observation == "inpaint":
            out.update({f"hidden/{k}": v for k, v in default_metrics(mean[:, 1:], truth[:, 1:], samples[..., 1:]).items()})
        out["baseline_rmse"] = float((truth[:, cols].double() - prior[cols].double()).pow(2).mean().sqrt())
        return out

    def plot_samples(self, samples: State, path: str | os.PathLike) -> Path:
        from matplotlib.figure import Figure  # not pyplot: no backend is selected or switched

        ref = self.reference()
        fig = Figure(figsize=(8, 4))
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        for ax, pts, title in ((axes[0], ref, "data (test split)"), (axes[1], samples, "samples")):
            pts = pts.detach().cpu()
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
            ax.set_title(title)
            ax.set_aspect("equal")
        fig.tight_layout()
        return save_figure(fig, path)


def toy_metrics(samples: Tensor, reference: Tensor, n_modes: int = 8, radius: float = 2.0,
                std: float = 0.25) -> dict[str, float]:
    """Sliced Wasserstein-2 to the reference, moment errors, and mode statistics.

    ``in_mode`` is the fraction of samples within 3 std of a mode centre; ``modes_covered`` the
    fraction of modes that received at least 1% of the samples.
    """
    samples = samples.detach().cpu().double()
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    d = torch.cdist(samples, centres)
    near = d.min(1)
    counts = torch.bincount(near.indices[near.values < 3 * std], minlength=n_modes)
    out = {"sliced_w2": sliced_wasserstein(samples, reference)}
    out.update(moment_errors(samples, reference))
    out["in_mode"] = float((near.values < 3 * std).double().mean())
    out["modes_covered"] = float((counts >= 0.01 * len(samples)).double().mean())
    return out


class ToyMLP(nn.Module):
    """A residual MLP ``f(x [B, d], t [B], cond [B] | None) -> [B, d]`` for low-dimensional data.

    Args:
        dim: data dimension; hidden, depth: width and number of residual blocks.
        n_classes: > 0 adds a label embedding (label ``n_classes`` = unconditional, used when
            ``cond`` is None and, with probability ``cond_drop``, in training for CFG).
        time_scale: multiplies t before the embedding (e.g. 1/T for DDPM step indices).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, n_classes: int = 0,
                 cond_drop: float = 0.1, time_scale: float = 1.0) -> None:
        super().__init__()
        self.temb = SinusoidalEmbedding(64, scale=time_scale)
        self.inp = nn.Linear(dim, hidden)
        self.tproj = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.n_classes, self.cond_drop = int(n_classes), float(cond_drop)
        self.cemb = nn.Embedding(n_classes + 1, hidden) if n_classes > 0 else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        if x.ndim != 2:
            raise ValueError(f"ToyMLP expects [B, d] inputs, got {tuple(x.shape)}")
        h = self.inp(x) + self.tproj(self.temb(t))
        if self.cemb is not None:
            if cond is None:
                cond = torch.full((x.shape[0],), self.n_classes, device=x.device, dtype=torch.long)
            elif self.training and self.cond_drop > 0:
                drop = torch.rand(x.shape[0], device=x.device) < self.cond_drop
                cond = torch.where(drop, torch.full_like(cond, self.n_classes), cond)
            h = h + self.cemb(cond.long())
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)


def adapter(n_train: int = 512, conditional: bool = False) -> "DomainAdapter":
    """A small toy :class:`workbench.adapter.DomainAdapter` (for conformance tests and notebooks)."""
    from .adapter import DomainAdapter

    return DomainAdapter(
        datamodule=GaussianMixtureDataModule(n_train=n_train, n_val=128, n_test=512, batch_size=128,
                                             conditional=conditional),
        network=ToyMLP(dim=2, hidden=64, depth=2, n_classes=8 if conditional else 0),
        metrics=toy_metrics,
    )

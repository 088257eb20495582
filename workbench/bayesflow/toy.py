"""Toys for the three Bayesian flows: data, small MLP networks, metrics and a plain training loop.

* continuous: the core's 2-D Gaussian mixture (:func:`workbench.toy.gaussian_mixture`, scored by
  :func:`workbench.toy.toy_metrics`);
* discrete: :func:`categorical_triples`, three dependent categorical variables over K classes, scored
  by :func:`categorical_metrics` (total variation / KL between joint histograms);
* periodic: :func:`torus_mixture`, a wrapped Gaussian mixture on the 2-torus [-pi, pi)^2 with a mode
  across the corner, scored by :func:`torus_metrics` (trigonometric moments, histogram TV, modes).

Everything is generated from seeds; nothing is downloaded. :func:`train` is a minimal Adam loop on
tensors (no Lightning) for tests and benchmarks.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..data import DomainDataModule, save_figure
from ..nn import SinusoidalEmbedding
from .method import BayesianFlowMethod
from .vonmises import wrap

__all__ = ["categorical_triples", "categorical_metrics", "torus_mixture", "TORUS_CENTRES", "torus_metrics",
           "BFNToyMLP", "train", "TorusMixtureDataModule", "CategoricalDataModule", "adapter"]


# -- discrete toy -------------------------------------------------------------------------------------
def categorical_triples(n: int, num_classes: int = 5, seed: int = 0) -> Tensor:
    """``[n, 3]`` class indices with a structured joint over K^3 cells.

    x0 has a skewed marginal (weights 1, 2, .., K); x1 = x0 + 1 (mod K) with prob. 0.7, else
    x0 - 1 (mod K); x2 = x0 + x1 (mod K) with prob. 0.85, else uniform. Only ~3K cells carry most mass.
    """
    K = int(num_classes)
    g = torch.Generator().manual_seed(seed)
    w = torch.arange(1, K + 1, dtype=torch.float64)
    x0 = torch.multinomial(w / w.sum(), n, replacement=True, generator=g)
    up = torch.rand(n, generator=g) < 0.7
    x1 = torch.where(up, x0 + 1, x0 - 1) % K
    keep = torch.rand(n, generator=g) < 0.85
    x2 = torch.where(keep, (x0 + x1) % K, torch.randint(0, K, (n,), generator=g))
    return torch.stack([x0, x1, x2], 1)


def _joint_hist(x: Tensor, K: int) -> Tensor:
    x = x.long().cpu()
    code = torch.zeros(x.shape[0], dtype=torch.long)
    for d in range(x.shape[1]):
        code = code * K + x[:, d].clamp(0, K - 1)
    return torch.bincount(code, minlength=K ** x.shape[1]).double() / x.shape[0]


def categorical_metrics(samples: Tensor, reference: Tensor, num_classes: int) -> dict[str, float]:
    """Total variation between the joint histograms (``tv``), KL(reference || samples) with the
    sample histogram smoothed by 1e-4 (``kl``), and the largest marginal TV (``marginal_tv``)."""
    p, q = _joint_hist(reference, num_classes), _joint_hist(samples, num_classes)
    qs = (q + 1e-4) / (q + 1e-4).sum()
    kl = float((p[p > 0] * (p[p > 0] / qs[p > 0]).log()).sum())
    marg = max(0.5 * float((_joint_hist(reference[:, d:d + 1], num_classes)
                            - _joint_hist(samples[:, d:d + 1], num_classes)).abs().sum())
               for d in range(reference.shape[1]))
    return {"tv": 0.5 * float((p - q).abs().sum()), "kl": kl, "marginal_tv": marg}


# -- periodic toy -------------------------------------------------------------------------------------
#: mode centres of :func:`torus_mixture`; the first straddles the corner (pi, pi) of [-pi, pi)^2
TORUS_CENTRES = torch.tensor([[3.0, 3.0], [0.0, 0.0], [-1.6, 1.6], [1.6, -1.4]], dtype=torch.float64)


def torus_mixture(n: int, std: float = 0.3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` angle pairs in [-pi, pi)^2 from an equal mixture of wrapped Gaussians at
    :data:`TORUS_CENTRES`. Returns (angles [n, 2] float32, mode labels [n])."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(TORUS_CENTRES), (n,), generator=g)
    x = TORUS_CENTRES[labels] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return wrap(x).float(), labels


def _trig_moments(x: Tensor) -> Tensor:
    a, b = x[:, 0], x[:, 1]
    feats = [f(k * v) for v in (a, b) for k in (1, 2) for f in (torch.cos, torch.sin)]
    feats += [torch.cos(a - b), torch.sin(a - b), torch.cos(a + b), torch.sin(a + b)]
    return torch.stack(feats, 1).mean(0)


def torus_metrics(samples: Tensor, reference: Tensor, std: float = 0.3, bins: int = 12) -> dict[str, float]:
    """Scores of angle pairs against the reference on the torus.

    ``moment_error``: max-abs error of the trigonometric moments (cos / sin of x_d and 2 x_d, of
    x_0 - x_1 and x_0 + x_1); ``hist_tv``: total variation between ``bins`` x ``bins`` histograms;
    ``in_mode``: fraction of samples within 3 std (wrapped distance) of a mode centre;
    ``modes_covered``: fraction of modes holding at least 1% of the samples.
    """
    s, r = samples.detach().double().cpu(), reference.detach().double().cpu()
    out = {"moment_error": float((_trig_moments(s) - _trig_moments(r)).abs().max())}

    def hist(x: Tensor) -> Tensor:
        idx = ((wrap(x) + math.pi) / (2 * math.pi) * bins).long().clamp(0, bins - 1)
        return torch.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).double() / len(x)

    out["hist_tv"] = 0.5 * float((hist(s) - hist(r)).abs().sum())
    d = wrap(s[:, None, :] - TORUS_CENTRES[None]).norm(dim=-1)
    near = d.min(1)
    ok = near.values < 3 * std
    counts = torch.bincount(near.indices[ok], minlength=len(TORUS_CENTRES))
    out["in_mode"] = float(ok.double().mean())
    out["modes_covered"] = float((counts >= 0.01 * len(s)).double().mean())
    return out


# -- networks ----------------------------------------------------------------------------------------
class BFNToyMLP(nn.Module):
    """A residual MLP for the toys of one flow kind on ``[B, d]`` states.

    * ``"continuous"``: input mu ``[B, d]``, output x_hat ``[B, d]``;
    * ``"discrete"``: input probabilities ``[B, d, K]``, output logits ``[B, d, K]``;
    * ``"periodic"``: input mean angles ``[B, d]`` (as cos / sin) and ``log_conc`` ``[B, d]``
      (rescaled by ``log_conc_range`` to about [0, 1]), output angles ``[B, d]`` as atan2 of two heads.
    The time ``t`` ``[B]`` enters through a sinusoidal embedding.
    """

    def __init__(self, kind: str, dim: int = 2, num_classes: int = 0, hidden: int = 128, depth: int = 3,
                 log_conc_range: tuple[float, float] = (math.log(1e-7), math.log(1e3))) -> None:
        super().__init__()
        if kind not in ("continuous", "discrete", "periodic"):
            raise ValueError(f"unknown flow kind {kind!r}")
        self.kind, self.dim, self.K = kind, int(dim), int(num_classes)
        self.lo, self.hi = map(float, log_conc_range)
        n_in = {"continuous": dim, "discrete": dim * num_classes, "periodic": 3 * dim}[kind]
        n_out = {"continuous": dim, "discrete": dim * num_classes, "periodic": 2 * dim}[kind]
        self.temb = SinusoidalEmbedding(32, max_freq=100.0)
        self.inp = nn.Linear(n_in, hidden)
        self.tproj = nn.Sequential(nn.Linear(32, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, n_out))

    def forward(self, theta: Tensor, t: Tensor, cond: Any = None, mask: Any = None,
                log_conc: Tensor | None = None) -> Tensor:
        B = theta.shape[0]
        if self.kind == "periodic":
            lc = torch.zeros_like(theta) if log_conc is None else (log_conc - self.lo) / (self.hi - self.lo)
            h = torch.cat([torch.cos(theta), torch.sin(theta), lc], -1)
        else:
            h = theta.reshape(B, -1)
        h = self.inp(h.float()) + self.tproj(self.temb(t))
        for blk in self.blocks:
            h = h + blk(h)
        o = self.out(h)
        if self.kind == "discrete":
            return o.reshape(B, self.dim, self.K)
        if self.kind == "periodic":
            return torch.atan2(o[:, self.dim:], o[:, :self.dim])
        return theta + o                           # continuous: x_hat = mu + correction


def train(method: BayesianFlowMethod, data: Tensor | dict, *, iters: int = 1000, batch_size: int = 256,
          lr: float = 2e-3, seed: int = 0, mask: Tensor | None = None, ema: float | None = None) -> list[float]:
    """Adam on random minibatches of ``data`` (a Tensor or a dict of Tensors, first dim = items) for
    ``iters`` steps with a cosine-decayed learning rate; all randomness from a generator seeded with
    ``seed``. With ``ema``, the parameters end as their exponential moving average. Returns the losses."""
    g = torch.Generator().manual_seed(seed)
    n = (data if torch.is_tensor(data) else next(iter(data.values()))).shape[0]
    opt = torch.optim.Adam(method.network.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=lr * 0.05)
    avg = [p.detach().clone() for p in method.network.parameters()] if ema else None
    losses = []
    method.train()
    for _ in range(iters):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        x = data[idx] if torch.is_tensor(data) else {k: v[idx] for k, v in data.items()}
        batch = {"x": x}
        if mask is not None:
            batch["mask"] = mask[idx]
        loss = method.loss(batch, g).loss.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.network.parameters(), 1.0)
        opt.step()
        sched.step()
        if avg is not None:
            with torch.no_grad():
                for a, p in zip(avg, method.network.parameters()):
                    a.lerp_(p, 1.0 - ema)
        losses.append(float(loss.detach()))
    if avg is not None:
        with torch.no_grad():
            for a, p in zip(avg, method.network.parameters()):
                p.copy_(a)
    method.eval()
    return losses


# -- datamodules for the CLI (``experiment=toy/bfn_torus``, ``toy/bfn_categorical``) -----------------
class _Items(torch.utils.data.Dataset):
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i]}


class _ToyDataModule(DomainDataModule):
    """Train / val / test splits of a generated toy (seeds ``10 * seed + split``)."""

    def __init__(self, n_train: int = 8192, n_val: int = 1024, n_test: int = 4096, batch_size: int = 256,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.sizes = (int(n_train), int(n_val), int(n_test))

    def _make(self, n: int, seed: int) -> Tensor:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (
            _Items(self._make(n, self.seed * 10 + i)) for i, n in enumerate(self.sizes))

    def reference(self) -> Tensor:
        if getattr(self, "test_set", None) is None:
            self.setup()
        return self.test_set.x


class TorusMixtureDataModule(_ToyDataModule):
    """:func:`torus_mixture` angle pairs in [-pi, pi)^2 (the periodic BFN's toy)."""

    def __init__(self, std: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.std = float(std)

    def _make(self, n: int, seed: int) -> Tensor:
        return torus_mixture(n, std=self.std, seed=seed)[0]

    def plot_samples(self, samples: Tensor, path: Any) -> Any:
        from matplotlib.figure import Figure  # not pyplot: no backend is selected or switched

        fig = Figure(figsize=(8, 4))
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        for ax, pts, title in ((axes[0], self.reference(), "data (test split)"), (axes[1], samples, "samples")):
            pts = pts.detach().cpu()
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
            ax.set(title=title, xlim=(-math.pi, math.pi), ylim=(-math.pi, math.pi), aspect="equal")
        fig.tight_layout()
        return save_figure(fig, path)


class CategoricalDataModule(_ToyDataModule):
    """:func:`categorical_triples` (three dependent categorical variables; the discrete BFN's toy)."""

    def __init__(self, num_classes: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def _make(self, n: int, seed: int) -> Tensor:
        return categorical_triples(n, self.num_classes, seed=seed)

    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        return {"x": torch.zeros(n, 3, dtype=torch.long)}

    def plot_samples(self, samples: Tensor, path: Any) -> Any:
        from matplotlib.figure import Figure

        K = self.num_classes
        fig = Figure(figsize=(9, 3))
        ax = fig.subplots()
        ref, got = _joint_hist(self.reference(), K), _joint_hist(samples, K)
        cells = torch.arange(K ** 3)
        ax.bar(cells - 0.2, ref, width=0.4, label="data (test split)")
        ax.bar(cells + 0.2, got, width=0.4, label="samples")
        ax.set(xlabel="joint cell (x0, x1, x2)", ylabel="frequency")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


def adapter(n_train: int = 512) -> Any:
    """A small joint-BFN :class:`workbench.adapter.DomainAdapter` for the conformance test: a
    continuous, a periodic and a discrete variable (the crystal-shaped system) under one time."""
    from functools import partial

    from ..adapter import DomainAdapter
    from .flows import ContinuousFlow, DiscreteFlow, PeriodicFlow
    from .method import BayesianFlowMethod

    flow = {"c": ContinuousFlow(0.05), "p": PeriodicFlow(beta1=100.0), "d": DiscreteFlow(3, beta1=2.0)}
    return DomainAdapter(
        datamodule=_JointToyDataModule(n_train=n_train, n_val=64, n_test=256, batch_size=64),
        network=_JointToyNet(),
        metrics=_joint_metrics,
        method=partial(BayesianFlowMethod, flow=flow, steps=10),
    )


class _JointToyDataModule(_ToyDataModule):
    """Dict states {c: [2] Gaussian mixture point, p: [2] torus angles, d: [3] classes of 3}."""

    def _make(self, n: int, seed: int) -> dict[str, Tensor]:
        from ..toy import gaussian_mixture

        return {"c": gaussian_mixture(n, seed=seed)[0], "p": torus_mixture(n, seed=seed + 1)[0],
                "d": categorical_triples(n, 3, seed=seed + 2)}

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (
            _DictItems(self._make(n, self.seed * 10 + i)) for i, n in enumerate(self.sizes))

    def reference(self) -> dict[str, Tensor]:
        if getattr(self, "test_set", None) is None:
            self.setup()
        return self.test_set.x


class _DictItems(torch.utils.data.Dataset):
    def __init__(self, x: dict[str, Tensor]) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": {k: v[i] for k, v in self.x.items()}}


class _JointToyNet(nn.Module):
    """One small MLP per variable (enough for the conformance test)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = BFNToyMLP("continuous", 2, hidden=16, depth=1)
        self.p = BFNToyMLP("periodic", 2, hidden=16, depth=1)
        self.d = BFNToyMLP("discrete", 3, num_classes=3, hidden=16, depth=1)

    def forward(self, theta: dict, t: Tensor, log_conc: dict | None = None, **extras: Any) -> dict[str, Tensor]:
        return {"c": self.c(theta["c"], t), "p": self.p(theta["p"], t, log_conc=(log_conc or {}).get("p")),
                "d": self.d(theta["d"], t)}


def _joint_metrics(samples: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, float]:
    from ..toy import toy_metrics

    out = {f"c/{k}": v for k, v in toy_metrics(samples["c"], reference["c"]).items()}
    out.update({f"p/{k}": v for k, v in torus_metrics(samples["p"], reference["p"]).items()})
    out.update({f"d/{k}": v for k, v in categorical_metrics(samples["d"], reference["d"], 3).items()})
    return out

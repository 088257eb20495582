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

from ..nn import SinusoidalEmbedding
from .method import BayesianFlowMethod
from .vonmises import wrap

__all__ = ["categorical_triples", "categorical_metrics", "torus_mixture", "TORUS_CENTRES", "torus_metrics",
           "BFNToyMLP", "train"]


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

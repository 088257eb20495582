"""Training losses. Each returns a per-sample loss ``[B]`` with an explicit weighting; the
LightningModule reduces it.

* :class:`DenoisingScoreMatching` (Vincent 2011; Song et al. 2021, Eq. 7) regresses the
  network's raw output onto the exact target of its parametrisation; with ``eps`` output
  this is the DDPM loss, with ``score`` output and ``weighting="sigma2"`` it is Song's
  lambda(t) = sigma^2 weighting, with ``edm`` output it is EDM's loss (Karras et al. Eq. 8,
  lambda = 1 / c_out^2 is absorbed by the preconditioning).
* :class:`FlowMatching` (Lipman et al. 2023) is the same regression with a velocity target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

import torch
from torch import Tensor

from .geometry import Geometry
from .precond import Denoiser
from .processes.base import Coefficients
from .state import State, batch_size, tree_map

__all__ = ["LossOutput", "DenoisingScoreMatching", "FlowMatching"]

Weighting = Union[Literal["uniform", "sigma2", "likelihood", "min_snr"], Callable[[Coefficients, Tensor], Tensor]]


@dataclass
class LossOutput:
    """Per-sample loss ``[B]`` and its parts (one per state variable) for logging."""

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    t: Tensor | None = None


def _ref_leaf(v: Any) -> Tensor:
    return v if torch.is_tensor(v) else next(iter(v.values()))


class DenoisingScoreMatching:
    """Per-sample denoising loss ``w(t) * reduce((D_raw(x_t, t) - target)^2)``.

    For a dict State under a :class:`~workbench.processes.JointProcess`, every weighting is
    computed per variable from that variable's own coefficients (a VE ``adj`` is weighted by its
    own sigma^2, not by the first variable's). On a geometry with a non-linear constraint set
    (a torus) the training x_t is projected exactly as the samplers project their states.

    Args:
        weighting: ``"uniform"``; ``"sigma2"`` (multiply by sigma(t)^2, Song's score weighting);
            ``"likelihood"`` (g(t)^2 / sigma(t)^2 on an eps output: the ELBO weighting of Song et
            al. 2021b); ``"min_snr"`` (min(SNR, gamma) / SNR on an eps output, Hang et al. 2023);
            or a callable ``(coef, t) -> [B]`` called once per variable with that variable's
            per-sample coefficients. Under per-element noise schedules (coefficients that vary
            within a sample, :class:`~workbench.processes.PerChannelProcess`) every weighting is
            computed from each element's own coefficients and applied to each entry before the
            reduction; a callable then gets the broadcast coefficients and returns a weight that
            broadcasts to the variable.
        reduction: ``"mean"`` over valid entries or ``"sum"`` (GDSS sums).
        key_weights: optional per-variable factors for dict states.
        min_snr_gamma: gamma of the min-SNR weighting.
        space: ``"native"`` regresses the raw output on its own target; ``"eps"`` / ``"x0"`` compare
            the converted predictions instead (GDSS's loss is (s sigma + z)^2 = eps error for both
            its eps- and score-output networks).
    """

    def __init__(self, weighting: Weighting = "uniform", reduction: Literal["mean", "sum"] = "mean",
                 key_weights: dict[str, float] | None = None, min_snr_gamma: float = 5.0,
                 space: Literal["native", "eps", "x0"] = "native") -> None:
        if space not in ("native", "eps", "x0"):
            raise ValueError(f"loss space must be 'native', 'eps' or 'x0', got {space!r}")
        self.space = space
        if isinstance(weighting, str) and weighting not in ("uniform", "sigma2", "likelihood", "min_snr"):
            raise ValueError(f"unknown weighting {weighting!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss reduction must be 'mean' or 'sum', got {reduction!r}")
        self.weighting, self.reduction = weighting, reduction
        self.key_weights = dict(key_weights or {})
        self.min_snr_gamma = float(min_snr_gamma)

    def weight(self, coef: Coefficients, t: Tensor) -> Tensor | None:
        """The weighting of one variable from its coefficients (None = uniform): ``[B]`` from
        per-sample ones, elementwise from per-element ones."""
        w = self.weighting
        if w == "uniform":
            return None
        if callable(w):
            return w(coef, t)
        s, a = coef.sigma, coef.alpha
        if w == "sigma2":
            return s**2
        if w == "likelihood":
            return coef.g2 / s**2
        snr = (a / s) ** 2
        return torch.clamp(snr, max=self.min_snr_gamma) / snr

    def __call__(self, denoiser: Denoiser, x0: State, *, geometry: Geometry,
                 generator: torch.Generator | None = None, extras: dict[str, Any] | None = None,
                 t: Tensor | None = None, noise: State | None = None) -> LossOutput:
        """Loss for a batch of clean states ``x0`` (any State; masks are in ``geometry``).

        ``t`` (``[B]``) and ``noise`` (shaped like ``x0``) may be given to evaluate the loss at
        fixed draws; by default both are drawn from ``generator``.
        """
        process = denoiser.process
        ref = _ref_leaf(x0)
        if t is None:
            t = process.sample_t(batch_size(x0), device=ref.device, generator=generator)
        t = t.to(device=ref.device, dtype=ref.dtype)
        eps = geometry.randn_like(x0, generator=generator) if noise is None else noise
        x0 = geometry.project(x0)
        # the samplers keep their states on the constraint set; so does training
        xt = geometry.project(process.marginal(x0, t, eps, geometry))
        coef = process.at(t, x0, geometry)
        out = denoiser.raw(xt, t, coef, **(extras or {}))
        if self.space == "native":
            target = denoiser.target(x0, eps, xt, coef)
        else:
            pred = denoiser.to_prediction(out, xt, coef)
            out, target = (pred.eps, eps) if self.space == "eps" else (pred.x0, x0)
        sq = tree_map(lambda o, y: (o - y) ** 2, out, target)
        # per variable: a per-sample weight multiplies the reduced error; a per-element weight
        # (per-element noise schedules) multiplies each entry before the reduction
        parts = {}
        for k in (["x"] if torch.is_tensor(sq) else list(sq)):
            ck = coef if torch.is_tensor(coef.alpha) else Coefficients(*(getattr(coef, f)[k] for f in _FIELDS))
            err, g = (sq, geometry) if torch.is_tensor(sq) else (sq[k], geometry.part(k))
            flat = _per_sample(ck)
            if flat is not None:
                w = self.weight(flat, t)
                parts[k] = g.reduce(err, self.reduction)
                if w is not None:
                    parts[k] = parts[k] * w
            else:
                w = self.weight(ck, t)
                parts[k] = g.reduce(err if w is None else err * w, self.reduction)
        loss = sum(self.key_weights.get(k, 1.0) * v for k, v in parts.items())
        return LossOutput(loss=loss, parts=parts, t=t)


class FlowMatching(DenoisingScoreMatching):
    """Conditional flow matching: the network outputs a velocity, regressed on alpha' x0 + sigma' eps.

    Use with ``Denoiser(prediction="velocity")`` on any process (typically an interpolant).
    """

    def __call__(self, denoiser: Denoiser, x0: State, **kwargs: Any) -> LossOutput:
        if denoiser.prediction != "velocity":
            raise ValueError(f"FlowMatching needs a velocity-predicting denoiser, got prediction={denoiser.prediction!r}")
        return super().__call__(denoiser, x0, **kwargs)


_FIELDS = ("alpha", "sigma", "d_alpha", "d_sigma")


def _per_sample(c: Coefficients) -> Coefficients | None:
    """Per-sample ``[B]`` coefficients of one variable from its broadcast ones, or None when they
    vary within a sample (per-element noise schedules): then weights are taken elementwise."""
    flat = [getattr(c, f).flatten(1) for f in _FIELDS]
    if any(not torch.equal(u, u[:, :1].expand_as(u)) for u in flat):
        return None
    return Coefficients(*(u[:, 0] for u in flat))

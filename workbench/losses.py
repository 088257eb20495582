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


def _first(v: Any) -> Tensor:
    return v if torch.is_tensor(v) else next(iter(v.values()))


class DenoisingScoreMatching:
    """Per-sample denoising loss ``w(t) * reduce((D_raw(x_t, t) - target)^2)``.

    Args:
        weighting: ``"uniform"``; ``"sigma2"`` (multiply by sigma(t)^2, Song's score weighting);
            ``"likelihood"`` (g(t)^2 / sigma(t)^2 on an eps output: the ELBO weighting of Song et
            al. 2021b); ``"min_snr"`` (min(SNR, gamma) / SNR on an eps output, Hang et al. 2023);
            or a callable ``(coef, t) -> [B]``.
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
        self.weighting, self.reduction = weighting, reduction
        self.key_weights = dict(key_weights or {})
        self.min_snr_gamma = float(min_snr_gamma)

    def _weight(self, coef: Coefficients, t: Tensor) -> Tensor | None:
        w = self.weighting
        if w == "uniform":
            return None
        if callable(w):
            return w(coef, t)
        s, a = _first(coef.sigma), _first(coef.alpha)
        if w == "sigma2":
            return s**2
        if w == "likelihood":
            return _first(coef.g2) / s**2
        snr = (a / s) ** 2
        return torch.clamp(snr, max=self.min_snr_gamma) / snr

    def __call__(self, denoiser: Denoiser, x0: State, *, geometry: Geometry,
                 generator: torch.Generator | None = None, extras: dict[str, Any] | None = None) -> LossOutput:
        """Loss for a batch of clean states ``x0`` (any State; masks are in ``geometry``)."""
        process = denoiser.process
        ref = _first(x0)
        t = process.sample_t(batch_size(x0), device=ref.device, generator=generator).to(ref.dtype)
        eps = geometry.randn_like(x0, generator=generator)
        x0 = geometry.project(x0)
        xt = process.marginal(x0, t, eps, geometry)
        coef = process.at(t, x0, geometry)
        out = denoiser.raw(xt, t, coef, **(extras or {}))
        if self.space == "native":
            target = denoiser.target(x0, eps, xt, coef)
        else:
            pred = denoiser.to_prediction(out, xt, coef)
            out, target = (pred.eps, eps) if self.space == "eps" else (pred.x0, x0)
        sq = tree_map(lambda o, y: (o - y) ** 2, out, target)
        parts = geometry.reduce_parts(sq, self.reduction)
        w = self._weight(_flat_coef(coef), t)
        if w is not None:
            parts = {k: v * w for k, v in parts.items()}
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


def _flat_coef(c: Coefficients) -> Coefficients:
    """Per-sample ``[B]`` view of broadcast coefficients (first entry along non-batch dims)."""
    def flat(v: Any) -> Any:
        return tree_map(lambda u: u.flatten(1)[:, 0], v)
    return Coefficients(flat(c.alpha), flat(c.sigma), flat(c.d_alpha), flat(c.d_sigma))

"""Parametrisations and the denoiser wrapper around a network.

A network outputs one of

* ``eps``      the noise,                      eps
* ``x0``       the clean data,                 x0
* ``v``        Salimans & Ho (2022),           alpha eps - sigma x0
* ``score``    grad log p_t(x),                -eps / sigma
* ``velocity`` the flow / PF-ODE velocity,     alpha' x0 + sigma' eps
* ``edm``      EDM preconditioning (Karras et al. 2022, Table 1): the network is F in
  x0 = c_skip x + c_out F(c_in x, c_noise), applied to x / alpha and sigma / alpha.

Given x_t = alpha x0 + sigma eps, each output converts exactly to the pair (x0, eps)
and back; :class:`Prediction` holds that pair and derives the rest. Networks never
see these scalings (EDM's rule): :class:`Denoiser` wraps them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .errors import InputError
from .geometry import Geometry
from .processes.base import Coefficients, Process
from .processes.per_channel import PerChannelProcess
from .state import State, tree_map

__all__ = ["Prediction", "Denoiser", "PREDICTIONS", "to_x0_eps", "from_x0_eps"]

PredictionType = Literal["eps", "x0", "v", "score", "velocity", "edm"]
PREDICTIONS = ("eps", "x0", "v", "score", "velocity", "edm")


@dataclass
class Prediction:
    """The denoiser's answer at (x_t, t): clean data and noise, with the coefficients used."""

    x0: State
    eps: State
    coef: Coefficients

    @classmethod
    def from_eps(cls, x: State, eps: State, coef: Coefficients) -> "Prediction":
        """The prediction whose noise is ``eps`` at x_t: x0 = (x_t - sigma eps) / alpha."""
        return cls(tree_map(lambda v, e, a, s: (v - s * e) / a, x, eps, coef.alpha, coef.sigma), eps, coef)

    @property
    def score(self) -> State:
        return tree_map(lambda e, s: -e / s, self.eps, self.coef.sigma)

    @property
    def v(self) -> State:
        return tree_map(lambda x0, e, a, s: a * e - s * x0, self.x0, self.eps, self.coef.alpha, self.coef.sigma)

    @property
    def velocity(self) -> State:
        """The probability-flow ODE velocity dx/dt = alpha' x0 + sigma' eps."""
        return tree_map(lambda x0, e, da, ds: da * x0 + ds * e, self.x0, self.eps, self.coef.d_alpha, self.coef.d_sigma)


def _edm_scalings(a: Tensor, s: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    sh = s / a
    denom = sh * sh + sigma_data**2
    c_skip = sigma_data**2 / denom
    c_out = sh * sigma_data / denom.sqrt()
    c_in = 1 / denom.sqrt()
    return c_skip, c_out, c_in


def to_x0_eps(kind: PredictionType, out: Tensor, x: Tensor, a: Tensor, s: Tensor, da: Tensor,
              ds: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor]:
    """Convert a raw network output of type ``kind`` at x_t into (x0, eps). Tensor-level."""
    if kind == "eps":
        return (x - s * out) / a, out
    if kind == "x0":
        return out, (x - a * out) / s
    if kind == "score":
        eps = -s * out
        return (x - s * eps) / a, eps
    if kind == "v":
        n = a * a + s * s
        return (a * x - s * out) / n, (s * x + a * out) / n
    if kind == "velocity":
        det = a * ds - s * da
        return (ds * x - s * out) / det, (a * out - da * x) / det
    if kind == "edm":
        c_skip, c_out, _ = _edm_scalings(a, s, sigma_data)
        x0 = c_skip * (x / a) + c_out * out
        return x0, (x - a * x0) / s
    raise ValueError(f"unknown prediction type {kind!r}; choose one of {PREDICTIONS}")


def from_x0_eps(kind: PredictionType, x0: Tensor, eps: Tensor, x: Tensor, a: Tensor, s: Tensor,
                da: Tensor, ds: Tensor, sigma_data: float = 0.5) -> Tensor:
    """The raw network output of type ``kind`` that corresponds to (x0, eps). Tensor-level."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    if kind == "velocity":
        return da * x0 + ds * eps
    if kind == "edm":
        c_skip, c_out, _ = _edm_scalings(a, s, sigma_data)
        return (x0 - c_skip * (x / a)) / c_out
    raise ValueError(f"unknown prediction type {kind!r}; choose one of {PREDICTIONS}")


class Denoiser(nn.Module):
    """Wraps a network ``net(x, t, **extras) -> State`` into a denoiser ``D(x, t) -> Prediction``.

    Args:
        net: the network; it sees the (EDM-scaled, if ``prediction="edm"``) state and
            ``process.net_time(t)`` and returns a state shaped like its input.
        process: the forward process.
        prediction: what the network outputs (see module docstring); for a dict state, a dict
            giving one type per variable is allowed (GDSS: eps for a VP variable, score for VE).
        sigma_data: data standard deviation for EDM preconditioning.
    """

    def __init__(self, net: nn.Module, process: Process, prediction: PredictionType | dict[str, PredictionType] = "eps",
                 sigma_data: float = 0.5) -> None:
        super().__init__()
        kinds = prediction.values() if isinstance(prediction, dict) else [prediction]
        for kind in kinds:
            if kind not in PREDICTIONS:
                raise ValueError(f"prediction must be one of {PREDICTIONS}, got {kind!r}")
        if isinstance(prediction, dict) and "edm" in prediction.values():
            raise ValueError("EDM preconditioning applies to the whole state; use prediction='edm'")
        same = getattr(process, "same_noise_schedule", None)
        if prediction == "edm" and same is not None and not same():
            if isinstance(process, PerChannelProcess):
                raise InputError("EDM preconditioning hands the network one noise level, but the channels of "
                                 f"this {type(process).__name__} have different noise schedules; use "
                                 "prediction 'eps', 'x0' or 'v'")
            raise ValueError("EDM preconditioning hands the network one noise level, but the variables of this "
                             "JointProcess have different noise schedules; use a per-variable prediction dict "
                             "(e.g. {'x': 'eps', 'adj': 'score'})")
        self.net, self.process, self.sigma_data = net, process, float(sigma_data)
        self.prediction = dict(prediction) if isinstance(prediction, dict) else prediction

    def kind(self, key: str | None) -> str:
        """The prediction type of variable ``key`` (``None`` for a Tensor state)."""
        if isinstance(self.prediction, dict):
            if key not in self.prediction:
                raise KeyError(f"no prediction type given for state variable {key!r}; have {sorted(self.prediction)}")
            return self.prediction[key]
        return self.prediction

    def raw(self, x: State, t: Tensor, coef: Coefficients, **extras: Any) -> State:
        """The network's raw output at (x_t, t)."""
        if self.prediction == "edm":
            x_in = tree_map(lambda v, a, s: v / a * _edm_scalings(a, s, self.sigma_data)[2], x, coef.alpha, coef.sigma)
            # one noise level for the whole state (checked shared at construction for joint processes)
            ref = coef.sigma if torch.is_tensor(coef.sigma) else next(iter(coef.sigma.values()))
            ra = coef.alpha if torch.is_tensor(coef.alpha) else next(iter(coef.alpha.values()))
            level = (ref / ra).flatten(1)
            if not torch.equal(level, level[:, :1].expand_as(level)):
                raise ValueError("EDM preconditioning hands the network one noise level per sample, but this "
                                 "process's noise level varies within a sample (per-element schedules); use "
                                 "prediction 'eps', 'x0' or 'v'")
            c_noise = torch.log(level[:, 0]) / 4
            out = self.net(x_in, c_noise, **extras)
        else:
            out = self.net(x, self.process.net_time(t), **extras)
        _check_structure(out, x)
        return out

    def forward(self, x: State, t: Tensor | float, geometry: Geometry, **extras: Any) -> Prediction:
        t = self.process._batch_t(t, x)
        coef = self.process.at(t, x, geometry)
        out = self.raw(x, t, coef, **extras)
        return self.to_prediction(out, x, coef)

    def to_prediction(self, out: State, x: State, coef: Coefficients) -> Prediction:
        """Convert a raw network output at x_t into a :class:`Prediction`."""
        pairs = _keywise(lambda k, o, v, a, s, da, ds: to_x0_eps(self.kind(k), o, v, a, s, da, ds, self.sigma_data),
                         out, x, coef.alpha, coef.sigma, coef.d_alpha, coef.d_sigma)
        if isinstance(pairs, dict):
            return Prediction({k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}, coef)
        return Prediction(pairs[0], pairs[1], coef)

    def target(self, x0: State, eps: State, x: State, coef: Coefficients) -> State:
        """The raw output a perfect network would give for these (x0, eps) (the regression target)."""
        return _keywise(lambda k, c, e, v, a, s, da, ds: from_x0_eps(self.kind(k), c, e, v, a, s, da, ds, self.sigma_data),
                        x0, eps, x, coef.alpha, coef.sigma, coef.d_alpha, coef.d_sigma)


def _keywise(fn: Any, first: State, *rest: Any) -> Any:
    """Like tree_map, but ``fn`` also receives the variable name (None for a Tensor state)."""
    if isinstance(first, dict):
        return {k: fn(k, first[k], *(r[k] if isinstance(r, dict) else r for r in rest)) for k in first}
    return fn(None, first, *rest)


def _check_structure(out: State, x: State) -> None:
    if isinstance(x, dict):
        if not isinstance(out, dict) or set(out) != set(x):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ValueError(f"network must return a dict with keys {sorted(x)}, got {got}")
        for k in x:
            if out[k].shape != x[k].shape:
                raise ValueError(f"network output {k!r} has shape {tuple(out[k].shape)}, expected {tuple(x[k].shape)}")
    elif not torch.is_tensor(out) or out.shape != x.shape:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"network output has shape {shape}, expected {tuple(x.shape)}")

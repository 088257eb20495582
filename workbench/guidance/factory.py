"""Guidance factories: ``guidance(denoiser, batch, generator=None) -> denoiser``, built per
batch of observations (the config group ``guidance``, used by ``workbench evaluate`` /
``sample`` through :mod:`workbench.conditional`, and by domains that guide by hand, e.g. the
time-series forecasts).

A factory holds the method's hyperparameters (from the config); called on a batch it reads the
batch's ``"observation"`` dict and returns the guided denoiser. The observation keys:

============== ================================================================================
``y``          the measurement ``A x + noise`` (a tensor; for a Mask, state-shaped, zero-filled)
``operator``   a :class:`~workbench.operators.ForwardOperator` (DPS, data consistency; a
               :class:`~workbench.operators.Mask` also gives ``obs_mask``)
``obs_mask``   1 where the state is observed (Replacement, self-guidance); optional when the
               operator is a Mask
``quantile_levels`` per-sample levels ``[B]`` for self-guidance with ``energy="quantile"``
============== ================================================================================

A result that must act on the state after every step (data consistency) exposes
``post_step(x, t_next, prediction) -> x``; the conditional loop passes it to the sampler
(wrappers forward attributes, so it is found through any wrapper stacked outside).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .data_consistency import DataConsistency
from .dps import DPS, apply_operator
from .replacement import Replacement
from .self_guidance import SelfGuidance

__all__ = ["GuidanceFactory", "ReplacementGuidance", "DPSGuidance", "SelfGuidanceFactory", "DataConsistencyGuidance",
           "masked_energy", "observation_of"]


def observation_of(batch: Mapping[str, Any], who: str, *required: str) -> dict[str, Any]:
    """The batch's ``"observation"`` dict, checked for the keys ``who`` needs."""
    obs = batch.get("observation") if isinstance(batch, Mapping) else None
    if not isinstance(obs, Mapping):
        raise ConfigError(f"guidance {who} needs batches with an 'observation' dict (from the datamodule's "
                          "observations()); this batch has none")
    missing = [k for k in required if obs.get(k) is None]
    if missing:
        raise ConfigError(f"guidance {who} needs observation key(s) {', '.join(map(repr, missing))}; "
                          f"the observation has {', '.join(map(repr, sorted(obs))) or 'none'}")
    return dict(obs)


def _obs_mask(obs: Mapping[str, Any], who: str) -> Tensor:
    """``obs_mask``, or the mask of a Mask operator."""
    if obs.get("obs_mask") is not None:
        return obs["obs_mask"]
    from ..operators import Mask

    op = obs.get("operator")
    if isinstance(op, Mask):
        return op.mask
    raise ConfigError(f"guidance {who} needs observation key 'obs_mask' (or a Mask operator); "
                      f"the observation has {', '.join(map(repr, sorted(obs))) or 'none'}")


def masked_energy(y: Tensor, obs_mask: Tensor | None, kind: str, q: Tensor | None = None,
                  operator: Any = None) -> Callable[[Tensor], Tensor]:
    """E(x0) per sample ``[B]`` on the observed entries: ``"mse"`` sum of (x0 - y)^2 * obs_mask,
    ``"quantile"`` sum of the pinball loss max(q e, (q - 1) e) * obs_mask, e = y - x0, at the
    sample's level ``q [B]``. Without ``obs_mask`` the residual is ``y - A(x0)`` of ``operator``
    over all measurements (TSDiff's observation self-guidance is the masked form)."""
    if obs_mask is None and operator is None:
        raise ValueError("masked_energy needs obs_mask or an operator")

    def residual(x0: Tensor) -> Tensor:
        return (y - x0) if obs_mask is not None else (y - apply_operator(operator, x0))

    def on_observed(v: Tensor) -> Tensor:
        return (v * obs_mask if obs_mask is not None else v).flatten(1).sum(1)

    if kind == "mse":
        return lambda x0: on_observed(residual(x0) ** 2)
    if kind == "quantile":
        if q is None:
            raise ValueError("quantile guidance needs the per-sample levels q")
        qq = q.reshape(-1, *([1] * (y.ndim - 1)))

        def energy(x0: Tensor) -> Tensor:
            e = residual(x0)
            return on_observed(torch.maximum(qq * e, (qq - 1) * e))

        return energy
    raise ValueError(f"guidance energy must be 'quantile' or 'mse', got {kind!r}")


class GuidanceFactory:
    """Base: ``factory(denoiser, batch, generator=None) -> guided denoiser``."""

    name = "guidance"

    def __call__(self, denoiser: nn.Module, batch: Mapping[str, Any],
                 generator: torch.Generator | None = None) -> nn.Module:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ReplacementGuidance(GuidanceFactory):
    """Inpainting: :class:`~workbench.guidance.Replacement` with the observation ``y`` (state-
    shaped) on ``obs_mask`` (or the Mask operator's mask). Exact observations only."""

    name = "replacement"

    def __call__(self, denoiser, batch, generator=None):
        obs = observation_of(batch, self.name, "y")
        return Replacement(denoiser, obs["y"], _obs_mask(obs, self.name), generator=generator)


class DPSGuidance(GuidanceFactory):
    """:class:`~workbench.guidance.DPS` on the observation's operator and ``y``.

    Args:
        zeta: step size; energy: ``norm`` | ``squared`` | ``gaussian`` (uses the operator's noise_std).
    """

    name = "dps"

    def __init__(self, zeta: float = 1.0, energy: str = "norm") -> None:
        if energy not in ("norm", "squared", "gaussian"):
            raise ConfigError(f"config key 'guidance.energy' must be norm, squared or gaussian, got {energy!r}")
        if not float(zeta) >= 0:
            raise ConfigError(f"config key 'guidance.zeta' must be >= 0, got {zeta!r}")
        self.zeta, self.energy = float(zeta), energy

    def __call__(self, denoiser, batch, generator=None):
        obs = observation_of(batch, self.name, "y", "operator")
        std = float(getattr(obs["operator"], "noise_std", 0.0) or 0.0)
        if self.energy == "gaussian" and not std > 0:
            raise ConfigError(f"config key 'guidance.energy' is gaussian, but the observation's operator "
                              f"({type(obs['operator']).__name__}) has noise_std={std:g}; use norm or squared")
        return DPS(denoiser, obs["operator"], obs["y"], zeta=self.zeta, energy=self.energy)


class SelfGuidanceFactory(GuidanceFactory):
    """:class:`~workbench.guidance.SelfGuidance` with :func:`masked_energy` of the observation
    (TSDiff's observation self-guidance). Its result also carries ``energy`` and ``scale`` for
    the step form :func:`~workbench.guidance.sample_self_guided_ddpm`.

    Args:
        scale: guidance scale s; energy: ``mse`` | ``quantile`` (needs ``quantile_levels``).
    """

    name = "self_guidance"

    def __init__(self, scale: float = 1.0, energy: str = "mse") -> None:
        if energy not in ("mse", "quantile"):
            raise ConfigError(f"config key 'guidance.energy' must be mse or quantile, got {energy!r}")
        self.scale, self.energy = float(scale), energy

    def __call__(self, denoiser, batch, generator=None):
        obs = observation_of(batch, self.name, "y")
        mask = obs.get("obs_mask")
        if mask is None and obs.get("operator") is None:
            mask = _obs_mask(obs, self.name)   # raises: neither obs_mask nor an operator
        if self.energy == "quantile" and obs.get("quantile_levels") is None:
            raise ConfigError("guidance self_guidance with energy=quantile needs observation key 'quantile_levels'")
        energy = masked_energy(obs["y"], mask, self.energy, obs.get("quantile_levels"), obs.get("operator"))
        return SelfGuidance(denoiser, energy, self.scale)


class DataConsistencyGuidance(GuidanceFactory):
    """:class:`~workbench.guidance.DataConsistency`: a per-step projection (``rho: null``) or
    proximal step onto the observation's ``operator`` and ``y``, as the sampler's ``post_step``.

    Args: weight, rho, noisy, cg_iters, cg_tol as in :class:`DataConsistency`.
    """

    name = "data_consistency"

    def __init__(self, weight: float = 1.0, rho: float | None = None, noisy: bool = True, cg_iters: int = 50,
                 cg_tol: float = 1e-6) -> None:
        if not 0 < float(weight) <= 1:
            raise ConfigError(f"config key 'guidance.weight' must be in (0, 1], got {weight!r}")
        if rho is not None and not float(rho) > 0:
            raise ConfigError(f"config key 'guidance.rho' must be > 0 or null, got {rho!r}")
        self.weight, self.rho, self.noisy = float(weight), rho, bool(noisy)
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def __call__(self, denoiser, batch, generator=None):
        obs = observation_of(batch, self.name, "y", "operator")
        return DataConsistency(denoiser, obs["operator"], obs["y"], weight=self.weight, rho=self.rho,
                               noisy=self.noisy, cg_iters=self.cg_iters, cg_tol=self.cg_tol, generator=generator)

"""Guidance as denoiser wrappers: each takes a denoiser and is itself a denoiser, so every
sampler runs guided without a fork. :func:`sample_self_guided_ddpm` guides the step instead
(TSDiff's DDPM form); :class:`DataConsistency` corrects the state after each step (its
``post_step``). :mod:`workbench.guidance.factory` builds them per batch of observations (the
config group ``guidance``)."""
from .base import DenoiserWrapper
from .cfg import ClassifierFreeGuidance
from .data_consistency import DataConsistency, project_affine, prox_data
from .dps import DPS
from .factory import (DataConsistencyGuidance, DPSGuidance, GuidanceFactory, ReplacementGuidance, SelfGuidanceFactory,
                      masked_energy)
from .replacement import Replacement
from .self_guidance import SelfGuidance, energy_grad, sample_self_guided_ddpm

__all__ = ["DenoiserWrapper", "ClassifierFreeGuidance", "Replacement", "DPS", "SelfGuidance", "energy_grad",
           "sample_self_guided_ddpm", "DataConsistency", "project_affine", "prox_data", "GuidanceFactory",
           "ReplacementGuidance", "DPSGuidance", "SelfGuidanceFactory", "DataConsistencyGuidance", "masked_energy"]

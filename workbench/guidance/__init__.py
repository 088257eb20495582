"""Guidance as denoiser wrappers: each takes a denoiser and is itself a denoiser, so every
sampler runs guided without a fork. :func:`sample_self_guided_ddpm` guides the step instead
(TSDiff's DDPM form)."""
from .base import DenoiserWrapper
from .cfg import ClassifierFreeGuidance
from .dps import DPS
from .replacement import Replacement
from .self_guidance import SelfGuidance, energy_grad, sample_self_guided_ddpm

__all__ = ["DenoiserWrapper", "ClassifierFreeGuidance", "Replacement", "DPS", "SelfGuidance", "energy_grad", "sample_self_guided_ddpm"]

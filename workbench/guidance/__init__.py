"""Guidance as denoiser wrappers: each takes a denoiser and is itself a denoiser, so every
sampler runs guided without a fork."""
from .cfg import ClassifierFreeGuidance
from .dps import DPS
from .replacement import Replacement

__all__ = ["ClassifierFreeGuidance", "Replacement", "DPS"]

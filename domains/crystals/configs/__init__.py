"""Hydra configs of the crystals domain (experiments under ``experiment/crystals/``)."""

"""Hydra configs of the medical domain (``experiment/medical/*.yaml``)."""

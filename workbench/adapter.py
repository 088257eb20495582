"""The contract between the core and a scientific domain."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .geometry import Euclidean, Geometry
from .operators import ForwardOperator  # re-exported; defined in workbench.operators
from .processes import VP
from .processes.base import Process
from .state import State

__all__ = ["DomainAdapter", "ForwardOperator"]


@dataclass
class DomainAdapter:
    """Everything a domain brings to the core.

    Attributes:
        datamodule: a :class:`workbench.data.DomainDataModule`; batches are dicts with the
            State under ``"x"`` and optional ``"mask"`` / ``"cond"``.
        geometry: the state's geometry (masks, symmetry, periodicity).
        network: ``nn.Module`` with ``forward(x, t, cond=None, mask=None) -> State``.
        metrics: ``fn(samples, reference) -> dict[str, float]``.
        operator: optional forward operator for inverse problems.
        process: the forward process the domain trains with.
        prediction: the network's parametrisation.
        method: None for diffusion (``process`` + ``prediction``), else a factory
            ``method(network) -> Method`` for another generative method (e.g.
            ``functools.partial(workbench.bayesflow.BayesianFlowMethod, flow=...)``); see
            :mod:`workbench.method`.
    """

    datamodule: Any
    geometry: Geometry = field(default_factory=Euclidean)
    network: nn.Module | None = None
    metrics: Callable[[State, State], dict[str, float]] | None = None
    operator: ForwardOperator | None = None
    process: Process = field(default_factory=VP)
    prediction: str = "eps"
    method: Callable[[nn.Module], Any] | None = None

    def module(self) -> Any:
        """The Lightning module for this adapter: a :class:`workbench.lit.DiffusionModule`, or a
        :class:`workbench.lit.GenerativeModule` holding ``method(network)``."""
        from .lit import DiffusionModule, GenerativeModule

        if self.method is not None:
            return GenerativeModule(self.method(self.network))
        return DiffusionModule(network=self.network, process=self.process, geometry=self.geometry,
                               prediction=self.prediction)

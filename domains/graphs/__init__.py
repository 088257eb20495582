"""Graphs and molecules: GDSS (Jo, Lee & Hwang, ICML 2022), a system of SDEs over node features
and adjacency. See README.md in this folder."""
from __future__ import annotations

__all__ = ["adapter"]


def adapter(n_graphs: int = 40):
    """A small community-small adapter (generated data) for the conformance test and notebooks."""
    from workbench.adapter import DomainAdapter
    from workbench.processes import VP, JointProcess

    from .data import GenericGraphDataModule
    from .geometry import graph_geometry
    from .metrics import GraphMetrics
    from .networks import GDSSNetwork

    return DomainAdapter(
        datamodule=GenericGraphDataModule("community_small", source="generate", n_graphs=n_graphs, batch_size=16),
        geometry=graph_geometry(),
        network=GDSSNetwork(max_feat_num=10, x_depth=2, x_nhid=8, a_nhid=8, a_layers=2, a_linears=2,
                            c_hid=4, c_final=2, adim=8),
        metrics=GraphMetrics("generic"),
        process=JointProcess(x=VP(0.1, 1.0), adj=VP(0.1, 1.0)),
        prediction="eps",
    )

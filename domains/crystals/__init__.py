"""Crystals: CrysBFN (Wu et al., ICLR 2025), a periodic Bayesian flow for crystal structure
prediction and ab initio generation, with a DiffCSP-style wrapped-normal diffusion baseline on the
same CSPNet-style network. See README.md in this folder."""
from __future__ import annotations

__all__ = ["adapter"]


def adapter(n_prototypes: int = 32, task: str = "gen"):
    """A small adapter for the conformance test and notebooks: generated perovskite prototypes
    (embedded, no download), a tiny :class:`~.networks.CSPNet` and CrysBFN (:func:`~.method.crysbfn`,
    ``task`` "gen": coordinates, lattice and types; "csp": types given) at n = 10 steps, scored by
    :func:`~.evaluation.crystal_metrics`."""
    from functools import partial

    from workbench.adapter import DomainAdapter

    from .data import CrystalDataModule
    from .evaluation import crystal_metrics
    from .method import crysbfn
    from .networks import CSPNet

    dm = CrystalDataModule(source="prototypes", n_prototypes=n_prototypes, task=task, batch_size=8, max_test=8)
    net = CSPNet(num_types=100, hidden=32, layers=2, num_freqs=8, time_dim=16, task=task, output="bfn")
    return DomainAdapter(datamodule=dm, network=net, method=partial(crysbfn, task=task, steps=10, strategy="flow"),
                         metrics=partial(crystal_metrics, task=task, dataset="perov_5", n_eval=None,
                                         fingerprint_gate=False))

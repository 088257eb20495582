"""The conformance test every domain adapter (entry-point group ``workbench.adapters``) and
every sampler runs through."""
from __future__ import annotations

from importlib import metadata

import pytest

from workbench.testing import check_adapter

ADAPTERS = sorted(metadata.entry_points(group="workbench.adapters"), key=lambda e: e.name)


@pytest.mark.parametrize("entry", ADAPTERS, ids=[e.name for e in ADAPTERS])
def test_adapter_conforms(entry) -> None:
    try:
        adapter = entry.load()()
    except (ImportError, FileNotFoundError) as e:  # optional extra or data not installed here
        pytest.skip(f"adapter {entry.name} unavailable: {e}")
    summary = check_adapter(adapter)
    if adapter.method is not None:   # a non-diffusion method samples with its own sampler
        assert summary["samplers"] == ["method"]
    else:
        assert summary["samplers"] == sorted(["euler_maruyama", "pc", "ode", "ddim", "dpm_solver", "s4"]) or \
            not adapter.process.stochastic
    assert all(isinstance(v, float) for v in summary["metrics"].values())


def test_toy_is_registered() -> None:
    assert {"toy", "toy_bfn"} <= {e.name for e in ADAPTERS}


def test_conformance_catches_a_broken_adapter() -> None:
    """The check must be able to fail: a network that drops the input shape is caught."""
    import torch
    from torch import nn

    from workbench.toy import adapter

    class Broken(nn.Module):
        def forward(self, x, t, **kw):
            return torch.zeros(x.shape[0], 3)

    a = adapter()
    a.network = Broken()
    with pytest.raises(ValueError, match="expected"):
        check_adapter(a)


def test_conformance_catches_a_broken_method_adapter() -> None:
    """The method branch must be able to fail too: a joint BFN network that drops a variable."""
    from workbench.bayesflow.toy import adapter

    a = adapter()
    inner = a.network

    class Dropping(type(inner)):
        def forward(self, theta, t, **kw):
            out = super().forward(theta, t, **kw)
            return {k: v for k, v in out.items() if k != "d"}

    a.network = inner
    a.network.__class__ = Dropping
    with pytest.raises((AssertionError, KeyError, TypeError)):
        check_adapter(a)

"""Library code must not change process-wide state behind its caller's back: the matplotlib
backend (a notebook's inline backend), RDKit's log switches, torch's global RNG."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def svg_backend():
    """Select a backend that is not Agg (as a notebook has its own), restore the previous one after."""
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield "svg"
    matplotlib.use(before, force=True)


def _open_figures() -> list[int]:
    import matplotlib.pyplot as plt

    return plt.get_fignums()


def test_toy_plot_keeps_the_backend(svg_backend: str, tmp_path: Path) -> None:
    from workbench.toy import GaussianMixtureDataModule

    dm = GaussianMixtureDataModule(n_train=64, n_val=16, n_test=64)
    figs = _open_figures()
    out = dm.plot_samples(torch.randn(32, 2), tmp_path / "toy.png")
    assert out.exists() and out.stat().st_size > 0
    assert matplotlib.get_backend() == svg_backend, "plotting switched the matplotlib backend"
    assert _open_figures() == figs, "plotting left a pyplot figure open"


def test_graph_plots_keep_the_backend(svg_backend: str, tmp_path: Path) -> None:
    nx = pytest.importorskip("networkx")
    pytest.importorskip("rdkit")
    from workbench.domains.graphs.plots import plot_graphs, plot_molecules

    figs = _open_figures()
    graphs = [nx.cycle_graph(5), nx.path_graph(4)]
    assert plot_graphs(graphs, graphs, tmp_path / "graphs.png", n=2).exists()
    assert plot_molecules([None], tmp_path / "mols.png").exists()      # the no-valid-molecule figure
    assert matplotlib.get_backend() == svg_backend, "plotting switched the matplotlib backend"
    assert _open_figures() == figs, "plotting left a pyplot figure open"


def test_molecule_parsing_leaves_rdkit_logging_on(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rdkit")
    import numpy as np
    from rdkit import Chem, RDLogger, rdBase

    from workbench.domains.graphs.io import MoleculeError, canonical_smiles, decode_molecule, encode_molecule

    before = rdBase.LogStatus()
    assert "rdApp.error:enabled" in before, "the test needs RDKit's error log on to start with"
    try:
        assert canonical_smiles("C1CC") is None                      # invalid: RDKit logs a parse error
        with pytest.raises(MoleculeError):
            encode_molecule("C1CC", ("C",), 9)
        types, adj = encode_molecule("CCO", ("C", "N", "O", "F"), 9)
        bad = adj.copy()
        bad[0, 1] = bad[1, 0] = 3
        bad[1, 2] = bad[2, 1] = 3                                     # C with valence 6: corrected quietly
        assert decode_molecule(types, bad, ("C", "N", "O", "F")).mol is not None
        quiet = capfd.readouterr().err
        assert rdBase.LogStatus() == before, "parsing changed RDKit's log switches for the whole process"
        Chem.MolFromSmiles("C1CC")                                  # outside the library: logged as before
        loud = capfd.readouterr().err
    finally:
        for line in before.splitlines():                              # undo a leak, for the other tests
            name, state = line.split(":")
            (RDLogger.EnableLog if state == "enabled" else RDLogger.DisableLog)(name)
    assert "C1CC" not in quiet, f"the library's expected parse failures should stay quiet: {quiet!r}"
    assert "C1CC" in loud, "RDKit's own error for the caller's invalid SMILES was swallowed"
    assert np.asarray(types).tolist()[:3] == [0, 0, 2]


def test_check_adapter_leaves_the_global_rng_alone() -> None:
    from workbench.testing import check_adapter
    from workbench.toy import adapter

    toy = adapter(n_train=128)                                      # (initialising its network draws)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = check_adapter(toy)
    assert torch.equal(torch.get_rng_state(), state), "check_adapter changed torch's global RNG state"
    torch.manual_seed(999)                                          # a different caller state ...
    second = check_adapter(toy)
    assert first["loss"] == second["loss"], "check_adapter is not reproducible on its own"  # ... same checks

"""The crystals domain's ``metrics`` entry of the configs: sampled tensors -> Structures -> CDVAE /
DiffCSP metrics (:mod:`.metrics`), as ``workbench evaluate`` calls it:
``crystal_metrics(samples, reference, meta=records)``."""
from __future__ import annotations

from typing import Any, Sequence

from workbench.errors import ConfigError

from .metrics import COV_CUTOFFS, csp_metrics, generation_metrics

__all__ = ["crystal_metrics"]


def crystal_metrics(samples: dict, reference: Sequence[Any], meta: Sequence[dict] | None = None, *, task: str = "csp",
                    dataset: str = "perov_5", n_eval: int | None = 1000, fingerprint_gate: bool = True,
                    progress: bool = False) -> dict[str, float]:
    """CSP: match rate and RMSE of each sample against the test crystal its template came from
    (``meta[k]["index"]``; StructureMatcher stol 0.5, angle_tol 10, ltol 0.3; a pair counts when
    prediction and truth are valid, as DiffCSP). Generation: validity, COV-R / COV-P with
    ``dataset``'s thresholds, and the Wasserstein distances of density and number of elements over
    at most ``n_eval`` valid samples against the test crystals.

    ``reference`` is the datamodule's :meth:`~.data.CrystalDataModule.reference` (it converts the
    samples); ``meta`` the templates' records, in the order of the samples (required: the records
    hold each sample's atom count, and for CSP its composition and test crystal)."""
    if task not in ("csp", "gen"):
        raise ConfigError(f"config key 'metrics.task' must be 'csp' or 'gen', got {task!r}")
    if dataset not in COV_CUTOFFS:
        raise ConfigError(f"config key 'metrics.dataset' must be one of {sorted(COV_CUTOFFS)}, got {dataset!r}")
    convert = getattr(reference, "to_structures", None)
    if convert is None or meta is None:
        raise ConfigError("crystal_metrics needs the crystals datamodule's reference() and the templates' meta "
                          "records (workbench evaluate passes both)")
    structures = convert(samples, meta=meta)
    n_built = sum(s is not None for s in structures)
    if task == "csp":
        gts = [reference[int(m["index"])] for m in meta]
        out = csp_metrics(structures, gts, fingerprint_gate=fingerprint_gate, progress=progress)
    else:
        n = None if n_eval is None else min(int(n_eval), len(structures))
        out = generation_metrics(structures, list(reference), dataset=dataset, n_eval=n, allow_fewer=True,
                                 progress=progress)
    out["built_fraction"] = n_built / max(len(structures), 1)
    # a mean over an empty set (AMSD with no fingerprinted sample, RMSE with no match) does not exist:
    # left out rather than reported as NaN (a run never ends with NaN results)
    out = {k: float(v) for k, v in out.items() if v == v}
    if task == "csp":
        # the RMSE is a mean over matched pairs: with none matched it does not exist (reported as the
        # count, not as NaN: a run never ends with NaN results)
        out["n_matched"] = float(round(out["match_rate"] * out["n"]))
        if out["n_matched"] == 0:
            out.pop("rmse", None)
    return out

"""Data plumbing shared by the domains: where datasets live, checksummed downloads,
atomic writes, and the :class:`DomainDataModule` base class.

Datasets are found under ``$WORKBENCH_DATA`` (the CI sets it to ``shared/data``), else
under the user cache dir ``$XDG_CACHE_HOME/workbench`` (``~/.cache/workbench``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .state import State

__all__ = [
    "data_root", "cache_dir", "find_data", "atomic_write", "write_json", "save_tensors", "download",
    "sha256sum", "load_tensors", "UnsafeOrCorruptFile", "save_figure", "EpochSeededSampler", "DomainDataModule",
    "call_with_meta",
]


def data_root() -> Path:
    """Root folder of prepared datasets: ``$WORKBENCH_DATA`` or the user cache dir."""
    env = os.environ.get("WORKBENCH_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "workbench"


def cache_dir() -> Path:
    """Where preprocessed data is cached: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench/cache``.

    Kept apart from :func:`data_root`, which may be read-only (a shared data folder).
    """
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "workbench" / "cache"


def find_data(relpath: str, hint: str = "") -> Path:
    """Path of a data file under :func:`data_root`, or FileNotFoundError saying where it was looked for."""
    p = data_root() / relpath
    if not p.exists():
        msg = f"data file not found: {p} (set WORKBENCH_DATA to the folder holding '{relpath}')"
        raise FileNotFoundError(msg + (f"; {hint}" if hint else ""))
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file next to ``path`` and rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indented, keys kept in order)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def save_tensors(path: str | os.PathLike, tensors: State | dict[str, Any]) -> None:
    """Save a state (tensors only) atomically with ``torch.save``; load with :func:`load_tensors`."""
    with atomic_write(path, "wb") as f:
        torch.save(tensors, f)


from .errors import UnsafeOrCorruptFile  # noqa: E402  (re-exported: the file family of workbench.errors)


def load_tensors(path: str | os.PathLike, map_location: Any = "cpu", what: str = "file") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, containers and plain values load; a
    pickled reference to code (a class, a function) is refused, never executed.

    Errors are one line naming the file and what was refused, raised without torch's own message
    (which advises re-running with ``weights_only=False``, i.e. running the file's code).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - replaced by a one-line error below
        reason = _load_failure(e)
    raise UnsafeOrCorruptFile(f"cannot load {what} {path}: {reason}") from None


def _load_failure(e: Exception) -> str:
    """The one fact in torch's load error: the refused global, else the unpickler's complaint."""
    import re

    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return (f"it references code ({m.group(1)}), which is never run on load; only tensors, "
                "containers and plain values are accepted")
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = m.group(1).split(". Please")[0].strip() if m else (text.strip().splitlines() or [""])[0]
    return f"not a torch file of tensors and containers ({type(e).__name__}: {detail[:200]})"


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (temporary file, then rename) and close it.

    A bare ``matplotlib.figure.Figure`` needs no backend (the domains' plots use one, so that
    plotting never selects or switches the backend of a notebook); a pyplot figure is closed.
    """
    import sys

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt = sys.modules.get("matplotlib.pyplot")   # not imported here: a Figure is not pyplot's
    if plt is not None:
        plt.close(fig)
    os.replace(tmp, path)
    return path


def sha256sum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *, timeout: float = 60.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically) and verify its SHA-256.

    An existing file with the right checksum is kept. Raises a clear error when offline or
    when the checksum does not match (the partial file is removed). ``file://`` URLs work,
    which is how this is tested without a network.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256sum(dest) == sha256):
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, atomic_write(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: r.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(
            f"could not download {url} -> {dest}: {e}. If this machine is offline, fetch the file "
            f"elsewhere and place it at {dest} (or under $WORKBENCH_DATA)."
        ) from e
    if sha256 is not None:
        got = sha256sum(dest)
        if got != sha256:
            dest.unlink()
            raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; file removed")
    return dest


class EpochSeededSampler(Sampler[int]):
    """Random permutation per epoch from (seed, epoch): reproducible and resumable.

    Lightning calls :meth:`set_epoch` before each epoch, so a run resumed at epoch e sees the
    same order as an uninterrupted one.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _jsonable(v: Any) -> Any:
    """Metadata records as JSON: arrays and tensors as nested lists, numpy scalars as numbers."""
    if torch.is_tensor(v):
        return v.detach().cpu().tolist()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class DomainDataModule(pl.LightningDataModule):
    """Base datamodule of a domain adapter.

    Subclasses build ``self.train_set`` / ``self.val_set`` / ``self.test_set`` (Datasets of
    dicts with ``"x"`` and optional ``"mask"``, ``"cond"``) in :meth:`setup`, and may override
    :meth:`sample_template`, :meth:`reference`, :meth:`save_samples` and :meth:`plot_samples`.
    """

    train_set: Dataset
    val_set: Dataset | None = None
    test_set: Dataset | None = None

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        sampler = EpochSeededSampler(len(ds), self.seed) if train else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          drop_last=False, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, False) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader(self.test_set, False) if self.test_set is not None else []

    # -- what the core asks of a domain ------------------------------------------------------
    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """A batch dict of ``n`` zero states (with masks / conditions) to start sampling from.

        The default repeats the shapes of the first training item. A domain may add ``"meta"``: a
        list of ``n`` per-item records (affine, header, coordinates, lattice ...) that the CLI
        hands back to :meth:`save_samples` with the generated items, in order.
        """
        item = self.train_set[0]
        x = item["x"]
        zeros = {k: torch.zeros(n, *v.shape) for k, v in x.items()} if isinstance(x, dict) else torch.zeros(n, *x.shape)
        out: dict[str, Any] = {"x": zeros}
        if item.get("mask") is not None:
            out["mask"] = item["mask"].unsqueeze(0).expand(n, *item["mask"].shape).clone()
        return out

    def reference(self) -> Any:
        """Reference data for the metrics (the test split by default), as one batched state."""
        ds = self.test_set if self.test_set is not None else (self.val_set or self.train_set)
        items = [ds[i] for i in range(len(ds))]
        return torch.utils.data.default_collate(items)["x"]

    def save_samples(self, samples: State, directory: str | os.PathLike, meta: list[Any] | None = None) -> list[Path]:
        """Write samples in the domain's native format; default: ``samples.pt`` (tensors only) and,
        when the templates carried metadata, ``meta.json`` (one record per sample, in order).

        ``meta`` is the list of the per-item records that :meth:`sample_template` put under the
        batch key ``"meta"`` (a NIfTI affine and header, SEG-Y geometry, netCDF coordinates, a
        lattice ...), handed back in the order of the samples so a domain can write native files.
        The CLI passes it only when the templates carried it, so a domain whose ``save_samples``
        has no ``meta`` argument keeps working.
        """
        path = Path(directory) / "samples.pt"
        save_tensors(path, samples)
        files = [path]
        if meta is not None:
            write_json(Path(directory) / "meta.json", {"items": [_jsonable(m) for m in meta]})
            files.append(Path(directory) / "meta.json")
        return files

    def plot_samples(self, samples: State, path: str | os.PathLike) -> Path | None:
        """Save a figure of samples next to the reference; default: none."""
        return None

    # -- conditional sampling (``workbench evaluate guidance=...``) ---------------------------
    def observations(self, n: int, batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches of at most ``batch_size`` (observation, ground truth) pairs, ``n`` in all, for
        conditional / inverse sampling: dicts ``{"x": truth, "observation": {...}}`` with the
        batch's ``"mask"`` / ``"cond"`` when it has them and optionally ``"meta"`` (one record per
        item). The observation holds ``y`` (the measurement), ``operator`` (a
        :class:`~workbench.operators.ForwardOperator`), and where they apply ``obs_mask`` (1 =
        observed entry of the state) and ``quantile_levels``; see :mod:`workbench.guidance.factory`.
        The default has none and says so.
        """
        from .errors import ConfigError

        raise ConfigError(f"config key 'guidance' is set, but {type(self).__name__} has no observations() for "
                          "conditional sampling (remove guidance=..., or implement observations() in the datamodule)")

    def conditional_metrics(self, mean: State, truth: State, samples: State) -> dict[str, float]:
        """Scores of posterior samples ``[S, N, ...]`` against the truth ``[N, ...]``; ``mean`` is
        their mean over S. Default: :func:`workbench.conditional.default_metrics` (RMSE / MAE of
        the mean, coverage of the +-2 std interval)."""
        from .conditional import default_metrics

        return default_metrics(mean, truth, samples)


def call_with_meta(fn: Any, *args: Any, meta: list[Any] | None = None) -> Any:
    """``fn(*args)``, plus ``meta=`` the templates' records when there are some and ``fn`` takes a
    ``meta`` keyword (a crystal's composition and atom count, which the sampled coordinates alone
    lack). ``workbench sample`` / ``evaluate`` and the conformance check call the experiment's
    ``metrics`` and the datamodule's ``plot_samples`` so."""
    import inspect

    if meta is not None:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        if "meta" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return fn(*args, meta=meta)
    return fn(*args)

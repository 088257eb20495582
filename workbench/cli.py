"""``workbench train | sample | evaluate | demo`` on Hydra configs.

    workbench train experiment=toy/gmm trainer.max_epochs=10
    workbench sample run_dir=runs/toy_gmm/20261123-101500 sample.n=2048 sampler=dpm_solver
    workbench evaluate run_dir=runs/toy_gmm/20261123-101500
    workbench evaluate run_dir=runs/toy_gmm/20261123-101500 guidance=replacement   (posterior samples, scored)
    workbench demo [--out DIR] [--tiny]
    workbench list                                   experiments of every installed domain, config groups
    workbench show experiment=graphs/qm9 [key=value]  one experiment: its data keys and whole config
    workbench train experiment=graphs/qm9 --help     the same as show
    workbench --debug <command> ...   (full tracebacks instead of one-line errors)

Domains announce their config packages under the ``workbench.configs`` entry-point group
(name -> ``package.with.configs``); they are added to Hydra's search path without importing
any domain code. A run directory holds ``config.yaml``, ``versions.json``, ``checkpoints/``,
``logs/``, ``samples/``, ``metrics.json`` and plots; every file is written atomically.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import ConfigError, InputError, RunFailed, check_int, check_number

__all__ = ["main", "compose_config", "build", "train", "sample", "evaluate", "demo", "ConfigError", "MissingExtra",
           "DemoFailure"]

ENV_RUN_DIR = "WORKBENCH_RUN_DIR"
ENV_TINY = "WORKBENCH_TINY"


#: top-level module -> the extra of ``pyproject.toml`` that installs it
EXTRAS = {
    "rdkit": "graphs", "torch_geometric": "graphs", "networkx": "graphs", "fcd_torch": "graphs",
    "pandas": "timeseries", "sklearn": "timeseries", "nibabel": "medical", "skimage": "medical", "pydicom": "medical", "segyio": "seismic",
    "pymatgen": "crystals", "smact": "crystals", "pywt": "pde", "xarray": "pde", "netCDF4": "pde",
    "tensorboard": "all",
}


class MissingExtra(ImportError):
    """An optional dependency of a domain is not installed; the message says what to install."""

    def __init__(self, module: str, where: str = "") -> None:
        extra = EXTRAS.get(module)
        hint = f"pip install 'workbench[{extra}]'" if extra else f"pip install {module}"
        super().__init__(f"{where + ' needs' if where else 'needs'} the optional package {module!r}, "
                         f"which is not installed: {hint}", name=module)
        self.module, self.hint = module, hint


class DemoFailure(Exception):
    """A demo experiment failed with an error that is not a config mistake (a bug); the cause is chained."""


def missing_module(e: BaseException) -> str | None:
    """The top-level name of a third-party module whose absence caused ``e`` (None otherwise)."""
    c: BaseException | None = e
    while c is not None:
        if isinstance(c, MissingExtra):
            return c.module
        if isinstance(c, ModuleNotFoundError) and c.name and not c.name.startswith("workbench"):
            return c.name.split(".")[0]
        c = c.__cause__ or c.__context__
    return None


# -- configuration --------------------------------------------------------------------------------
def config_packages() -> list[str]:
    """Config packages announced by installed domains (entry-point group ``workbench.configs``)."""
    eps = metadata.entry_points(group="workbench.configs")
    return sorted({ep.value for ep in eps})


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> Any:
    """Compose the root config with command-line style ``overrides`` (raises ConfigError)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = list(overrides)
    pkgs = config_packages()
    if pkgs and not any(o.startswith("hydra.searchpath") for o in overrides):
        overrides.append("hydra.searchpath=[" + ",".join(f"pkg://{p}" for p in pkgs) + "]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("workbench.configs", version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    except Exception as e:  # noqa: BLE001 - hydra raises several types; all are config errors here
        raise ConfigError(_one_line(e)) from e
    OmegaConf.set_struct(cfg, True)
    return cfg


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        key = getattr(cause, "full_key", None)
        msg = f"{msg} ({first}{f'; key: {key}' if key and key not in first else ''})"
    return msg


def _instantiate(cfg: Any, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg[key]``.

    A config mistake (a target that cannot be found, an unknown or ill-typed argument, a value
    the class rejects) becomes a one-line ConfigError naming the key; a missing optional package
    becomes :class:`MissingExtra` (saying which extra to install); any other exception is a bug
    in the code being built and propagates unchanged, with its traceback.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, key, throw_on_missing=False)
    if node is None or OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"config key '{key}' is required but not set (pick an experiment=<domain>/<name>)")
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # noqa: BLE001 - classified below
        target = str(OmegaConf.select(node, "_target_", default="") or "") if OmegaConf.is_dict(node) else ""
        missing = missing_module(e)
        if missing is not None and not target.startswith(missing + ".") and target != missing:
            raise MissingExtra(missing, f"config key '{key}' ({target or 'its value'})") from e
        inner = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ is not None else e
        if isinstance(inner, InputError):  # already one sentence naming the key or the file
            raise inner from None
        if isinstance(e, InstantiationException) and "locating target" in str(e):
            raise ConfigError(f"bad value under config key '{key}': cannot find target {target!r}") from e
        if isinstance(inner, (TypeError, ValueError, InstantiationException, ConfigError)):
            text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
            raise ConfigError(f"bad value under config key '{key}': {type(inner).__name__}: {text}") from e
        raise inner from None


def validate_config(cfg: Any) -> None:
    """Check the core's config values by type and range before anything runs; raise a
    :class:`ConfigError` naming the first bad key. (Domain keys are checked by their datamodules,
    process parameters by the process classes.)"""
    from omegaconf import OmegaConf

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)

    check_int(get("seed"), "seed", minimum=0)
    for key in ("sample.n", "sample.batch_size", "sample.steps", "module.sample_steps", "sample.posterior_samples",
                "sample.observations"):
        check_int(get(key), key, minimum=1, allow_none=True)
    check_int(get("trainer.max_epochs"), "trainer.max_epochs", minimum=-1, allow_none=True)
    check_int(get("trainer.max_steps"), "trainer.max_steps", minimum=-1, allow_none=True)
    check_int(get("trainer.accumulate_grad_batches"), "trainer.accumulate_grad_batches", minimum=1, allow_none=True)
    check_int(get("trainer.check_val_every_n_epoch"), "trainer.check_val_every_n_epoch", minimum=1, allow_none=True)
    check_int(get("datamodule.batch_size"), "datamodule.batch_size", minimum=1, allow_none=True)
    check_int(get("datamodule.num_workers"), "datamodule.num_workers", minimum=0, allow_none=True)
    check_number(get("module.lr"), "module.lr", minimum=0.0, exclusive_minimum=True, allow_none=True)
    check_number(get("trainer.gradient_clip_val"), "trainer.gradient_clip_val", minimum=0.0, allow_none=True)


def _resolve_run_dir(cfg: Any) -> Path:
    from omegaconf import OmegaConf

    run_dir = cfg.run_dir or os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = os.path.join("runs", str(cfg.name), stamp)
    run_dir = os.path.abspath(run_dir)
    OmegaConf.update(cfg, "run_dir", run_dir, force_add=True)
    return Path(run_dir)


def _idle_cores(cores: int, seconds: float = 0.25) -> float | None:
    """Cores idle right now, from two reads of /proc/stat (None where it does not exist)."""
    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)   # total, idle + iowait
    a = read()
    if a is None:
        return None
    time.sleep(seconds)
    b = read()
    if b is None or b[0] == a[0]:
        return None
    return cores * (b[1] - a[1]) / (b[0] - a[0])


def choose_threads(requested: Any = None) -> tuple[int, str]:
    """torch's intra-op threads for a run, and why: the ``threads`` config key if set, else
    ``OMP_NUM_THREADS`` if set, else the cores idle right now (at least 1). Oversubscribed OpenMP
    threads spin: with 2 threads on a 2-core machine and one other busy process, TSDiff training
    went from 0.2 to 10-12 s per batch; one thread fixed it."""
    if requested is not None:
        return int(check_int(requested, "threads", minimum=1)), "config key threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    idle = _idle_cores(cores)
    if idle is None:
        return cores, f"auto: {cores} cores"
    n = max(1, min(cores, int(idle + 0.5)))
    return n, f"auto: {cores} cores, {idle:.1f} idle at start"


@contextlib.contextmanager
def torch_threads(requested: Any = None) -> Iterator[tuple[int, str]]:
    """``with torch_threads() as (n, why):`` torch's intra-op threads set for the block as
    :func:`choose_threads` picks them (``requested``, else ``OMP_NUM_THREADS``, else the idle
    cores), and restored afterwards, also when the block raises (for notebooks and scripts: the
    CLI's commands do this themselves)."""
    import torch

    n, why = choose_threads(requested)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n, why
    finally:
        torch.set_num_threads(old)


def _threads(cfg: Any) -> contextlib.AbstractContextManager[tuple[int, str]]:
    """:func:`torch_threads` with the config's ``threads`` key."""
    return torch_threads(cfg.get("threads") if hasattr(cfg, "get") else None)


@contextlib.contextmanager
def _scoped_global_state() -> Iterator[None]:
    """Restore the process's environment variables and RNG states (Python, NumPy, torch) after a
    block: ``train`` seeds everything (Lightning's ``seed_everything`` also writes PL_* variables),
    which must not leak into a notebook that calls it. Variables torch sets for itself lazily
    (TORCH*/PYTORCH*) are left alone."""
    import random

    import numpy as np
    import torch

    env = dict(os.environ)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        for k in set(os.environ) - set(env):
            if not k.startswith(("TORCH", "PYTORCH")):
                del os.environ[k]
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("workbench", "torch", "pytorch-lightning", "hydra-core", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# -- building ----------------------------------------------------------------------------------------
def build(cfg: Any) -> tuple[Any, Any, Any]:
    """(datamodule, module, metrics fn or None) from a composed config: a DiffusionModule, or a
    GenerativeModule holding the config's ``method`` when it is set (e.g. a Bayesian flow network)."""
    from .lit import DiffusionModule

    dm = _instantiate(cfg, "datamodule")
    network = _instantiate(cfg, "network")
    process = _instantiate(cfg, "process")
    geometry = _instantiate(cfg, "geometry")
    loss = _instantiate(cfg, "loss")
    sampler = _instantiate(cfg, "sampler")
    metrics = _instantiate(cfg, "metrics") if cfg.get("metrics") is not None else None
    from hydra.utils import instantiate

    try:  # nested _target_ entries (e.g. an optimizer partial) are instantiated
        kwargs = instantiate(cfg.module, _convert_="all")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"bad value under config key 'module': {_one_line(e)}") from e
    kwargs = dict(kwargs)
    if cfg.get("method") is not None:
        return dm, _method_module(cfg, network, kwargs), metrics
    try:
        module = DiffusionModule(network=network, process=process, geometry=geometry, loss=loss,
                                 sampler=sampler, seed=int(cfg.seed), **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value under config key 'module': {e}") from e
    return dm, module, metrics


#: module keys that belong to diffusion; a non-diffusion ``method`` takes its own settings
_DIFFUSION_ONLY = ("prediction", "sample_spacing", "sigma_data")


def _sampler_record(cfg: Any) -> dict[str, str]:
    """What drew the samples, for metrics.json: the sampler of diffusion, else the method."""
    if cfg.get("method") is not None:
        return {"method": str(cfg.method.get("_target_"))}
    return {"sampler": str(cfg.sampler.get("_target_"))}


def _method_module(cfg: Any, network: Any, kwargs: dict) -> Any:
    """A GenerativeModule holding the config's ``method`` (a partial taking ``network=``); the
    optimiser keys under ``module`` apply, and ``module.sample_steps`` is the default step count.
    (``process``, ``loss`` and ``sampler`` are diffusion's and are not used.)"""
    from .lit import GenerativeModule

    factory = _instantiate(cfg, "method")
    try:
        method = factory(network=network) if callable(factory) and not hasattr(factory, "loss") else factory
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value under config key 'method': {_one_line(e)}") from e
    for k in _DIFFUSION_ONLY:
        kwargs.pop(k, None)
    try:
        return GenerativeModule(method, seed=int(cfg.seed), **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value under config key 'module' or 'method': {e}") from e


def _trainer(cfg: Any, run_dir: Path) -> tuple[Any, list]:
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from .lit import AtomicCheckpointIO

    callbacks = [_instantiate(cfg, f"callbacks.{k}") for k in (cfg.get("callbacks") or {})]
    loggers = []
    for k in cfg.get("logger") or {}:
        made = _instantiate(cfg, f"logger.{k}")
        loggers.extend(made if isinstance(made, list) else [made])
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        trainer = pl.Trainer(callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
                             default_root_dir=str(run_dir), **kwargs)
    except (TypeError, ValueError, pl.utilities.exceptions.MisconfigurationException) as e:
        raise ConfigError(f"bad value under config key 'trainer': {e}") from e
    return trainer, callbacks


# -- commands ------------------------------------------------------------------------------------------
def train(cfg: Any) -> Path:
    """Train (resuming from ``<run_dir>/checkpoints/last.ckpt`` when present); returns the run dir.

    Seeds everything for the run, then restores the caller's environment and RNG states."""
    with _scoped_global_state(), _threads(cfg) as threads:
        return _train(cfg, threads)


def _train(cfg: Any, threads: tuple[int, str] = (0, "")) -> Path:
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from .data import atomic_write, write_json

    validate_config(cfg)
    run_dir = _resolve_run_dir(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm, module, _ = build(cfg)
    trainer, _ = _trainer(cfg, run_dir)
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "config.yaml") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(run_dir / "versions.json", {**versions(), "seed": int(cfg.seed), "threads": threads[0],
                                               "threads_source": threads[1]})
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = str(last) if cfg.resume and last.exists() and not cfg.trainer.fast_dev_run else None
    if ckpt and trainer.global_rank == 0:
        print(f"workbench: resuming from {ckpt}", file=sys.stderr)
    # DDP children re-run the command line: they find the same run directory through the
    # environment (train's _scoped_global_state restores the caller's environment afterwards)
    os.environ[ENV_RUN_DIR] = str(run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    if not trainer.num_training_batches and not trainer.fast_dev_run:
        raise RunFailed(f"training ran 0 batches: the training split of {type(dm).__name__} is empty or smaller "
                        "than one batch (check the data files, the split sizes and datamodule.batch_size)")
    return run_dir


def _load_run(cfg: Any) -> tuple[Any, Any, Any, Path]:
    """Rebuild a trained run's model from ``cfg.run_dir`` (EMA weights when asked)."""
    from .lit import load_checkpoint, load_ema_weights

    if not cfg.run_dir:
        raise ConfigError("config key 'run_dir' must point at a trained run (run_dir=runs/...)")
    run_dir = Path(cfg.run_dir)
    dm, module, metrics = build(cfg)
    name = str(cfg.get("checkpoint") or "last")
    ckpt_path = run_dir / "checkpoints" / (name if name.endswith(".ckpt") else f"{name}.ckpt")
    if not ckpt_path.exists():
        have = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
        raise FileNotFoundError(f"no checkpoint {ckpt_path.name} in {run_dir}/checkpoints"
                                + (f" (there are: {', '.join(have)})" if have else " (train first: workbench train ...)"))
    ckpt = load_checkpoint(ckpt_path)
    module.load_state_dict(ckpt["state_dict"])
    if cfg.sample.use_ema:
        load_ema_weights(module, ckpt)
    return dm, module, metrics, run_dir


def _draw(cfg: Any, dm: Any, module: Any) -> tuple[Any, list[Any] | None]:
    """``sample.n`` samples in batches, and the per-item metadata records of the templates (None when
    they carried none)."""
    import torch

    from .state import cat, to_device

    dm.prepare_data()
    dm.setup("fit")
    n, bs = int(cfg.sample.n), int(cfg.sample.batch_size)
    g = torch.Generator(device=module.device).manual_seed(int(cfg.seed) + 1)
    out: list[Any] = []
    metas: list[Any] | None = []
    for start in range(0, n, bs):
        template = dm.sample_template(min(bs, n - start))
        meta = template.pop("meta", None) if isinstance(template, dict) else None
        if meta is None or metas is None:
            metas = None
        else:
            if len(meta) != min(bs, n - start):
                raise ConfigError(f"{type(dm).__name__}.sample_template({min(bs, n - start)}) returned "
                                  f"{len(meta)} metadata records; it must return one per item")
            metas.extend(meta)
        out.append(to_device(module.sample(template, steps=int(cfg.sample.steps), generator=g,
                                           progress=sys.stderr.isatty()), "cpu"))
    samples = cat(out)
    leaves = [samples] if torch.is_tensor(samples) else list(samples.values())
    bad = sum(int((~torch.isfinite(v)).sum()) for v in leaves)
    if bad:
        total = sum(v.numel() for v in leaves)
        raise RunFailed(f"sampling produced {bad} non-finite values out of {total} (nothing was written): the "
                        "model may have diverged in training (check the logged loss) or the sampler settings "
                        f"may not suit it ({next(iter(_sampler_record(cfg).items()))[1]}, {cfg.sample.steps} steps)")
    return samples, (metas or None)


def _fresh(path: Path) -> Path:
    """``path`` if nothing is there yet, else the first free ``<stem>-2<suffix>``, ``-3``, ...: a
    second ``sample`` / ``evaluate`` in a run directory keeps the earlier outputs."""
    candidate, k = path, 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return candidate


def _suffix(out: Path) -> str:
    """``""`` for ``samples``, ``"-2"`` for ``samples-2``: the plots follow their samples' folder."""
    return out.name[len("samples"):]


def _write_report(report: dict, out: Path, run_dir: Path) -> None:
    """The report beside its samples and as the run's latest ``metrics.json``."""
    from .data import write_json

    for folder in (out, run_dir):
        write_json(folder / "metrics.json", report)


def _save(dm: Any, samples: Any, directory: Path, meta: list[Any] | None) -> list[Path]:
    """``dm.save_samples``, with the templates' metadata records when they carried any."""
    return dm.save_samples(samples, directory, meta=meta) if meta is not None else dm.save_samples(samples, directory)


def sample(cfg: Any) -> tuple[Any, Path]:
    """Draw ``sample.n`` samples from a trained run, save them natively (to ``samples``, or
    ``samples-2``, ... when earlier calls wrote there) and plot them; with
    ``guidance`` set, posterior samples for the datamodule's observations instead
    (:func:`_conditional`)."""
    validate_config(cfg)
    dm, module, _, run_dir = _load_run(cfg)
    if cfg.get("guidance") is not None:
        with _threads(cfg):
            _conditional(cfg, dm, module, run_dir)
        return None, run_dir
    t0 = time.perf_counter()
    with _threads(cfg):
        samples, meta = _draw(cfg, dm, module)
    seconds = time.perf_counter() - t0
    out = _fresh(run_dir / "samples")
    files = _save(dm, samples, out, meta)
    if cfg.sample.plot:
        from .data import call_with_meta

        call_with_meta(dm.plot_samples, samples, run_dir / "plots" / f"samples{_suffix(out)}.png", meta=meta)
    print(f"workbench: {cfg.sample.n} samples in {seconds:.1f} s -> {', '.join(map(str, files))}", file=sys.stderr)
    return samples, run_dir


def evaluate(cfg: Any) -> dict[str, float]:
    """Sample, compute the domain's metrics against its reference and write ``metrics.json`` (and a
    copy beside the samples, in a fresh ``samples[-k]`` folder as :func:`sample` does);
    with ``guidance`` set, score posterior samples of the datamodule's observations instead
    (:func:`_conditional`)."""
    validate_config(cfg)
    dm, module, metrics_fn, run_dir = _load_run(cfg)
    if cfg.get("guidance") is not None:
        with _threads(cfg):
            return _conditional(cfg, dm, module, run_dir, score=True)
    if metrics_fn is None:
        raise ConfigError("config key 'metrics' is not set for this experiment")
    with _threads(cfg):   # chosen once for the draw and the task
        return _evaluate(cfg, dm, module, metrics_fn, run_dir)


def _conditional(cfg: Any, dm: Any, module: Any, run_dir: Path, score: bool = False) -> dict[str, float]:
    """Conditional / inverse sampling (config key ``guidance``: a factory ``guidance(denoiser,
    batch, generator) -> denoiser``, see :mod:`workbench.conditional`): ``sample.posterior_samples``
    samples for each of ``sample.observations`` (default ``sample.n``) observations of
    ``dm.observations``, written as ``samples/posterior`` (observation-major), ``samples/mean``,
    ``samples/std`` and ``samples/truth``; with ``score``, ``dm.conditional_metrics`` of the
    posterior go to ``metrics.json``. The experiment's unconditional ``metrics`` and ``task``
    are not run."""
    import torch
    from omegaconf import OmegaConf

    if not hasattr(module, "denoiser"):
        raise ConfigError(f"config key 'guidance' wraps a diffusion denoiser, but this run's method is "
                          f"{cfg.method.get('_target_') if cfg.get('method') is not None else type(module).__name__}"
                          " (remove guidance=...)")

    from . import conditional
    from .state import tree_map

    def get(key: str, default: Any) -> Any:
        v = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        return default if v is None else v

    guidance = _instantiate(cfg, "guidance")
    if not callable(guidance):
        raise ConfigError(f"config key 'guidance' must build a callable guidance(denoiser, batch), got "
                          f"{type(guidance).__name__}")
    n = int(get("sample.observations", cfg.sample.n))
    s = int(get("sample.posterior_samples", 8))
    g = torch.Generator(device=module.device).manual_seed(int(cfg.seed) + 2)
    t0 = time.perf_counter()
    post = conditional.run(module, dm, guidance, n=n, batch_size=int(cfg.sample.batch_size), posterior=s,
                           steps=int(cfg.sample.steps), generator=g, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    out = _fresh(run_dir / "samples")
    flat = tree_map(lambda v: v.transpose(0, 1).reshape(-1, *v.shape[2:]), post.samples)
    meta_rep = None if post.meta is None else [m for m in post.meta for _ in range(s)]
    for name, value, meta in (("mean", post.mean, post.meta), ("std", post.std, post.meta),
                              ("truth", post.truth, post.meta), ("posterior", flat, meta_rep)):
        _save(dm, value, out / name, meta)
    if cfg.sample.plot:
        dm.plot_samples(flat, run_dir / "plots" / f"posterior{_suffix(out)}.png")
    n_obs = len(next(iter(post.truth.values())) if isinstance(post.truth, dict) else post.truth)
    print(f"workbench: {s} posterior samples for each of {n_obs} observations in {seconds:.1f} s -> "
          f"{out}/{{posterior,mean,std,truth}}", file=sys.stderr)
    if not score:
        return {}
    metrics = {k: float(v) for k, v in dm.conditional_metrics(post.mean, post.truth, post.samples).items()}
    report = {"metrics": metrics, "guidance": OmegaConf.to_container(cfg.guidance, resolve=True),
              "n_observations": n_obs, "posterior_samples": s, "steps": int(cfg.sample.steps),
              **_sampler_record(cfg), "sampling_seconds": round(seconds, 3), "samples_dir": out.name}
    _write_report(report, out, run_dir)
    return metrics


def _evaluate(cfg: Any, dm: Any, module: Any, metrics_fn: Any, run_dir: Path) -> dict[str, float]:
    from .data import call_with_meta

    t0 = time.perf_counter()
    samples, meta = _draw(cfg, dm, module)
    sample_s = time.perf_counter() - t0
    out = _fresh(run_dir / "samples")
    _save(dm, samples, out, meta)
    metrics = {k: float(v) for k, v in call_with_meta(metrics_fn, samples, dm.reference(), meta=meta).items()}
    if cfg.sample.plot:
        call_with_meta(dm.plot_samples, samples, run_dir / "plots" / f"samples{_suffix(out)}.png", meta=meta)
    report = {"metrics": metrics, "n_samples": int(cfg.sample.n), "steps": int(cfg.sample.steps),
              **_sampler_record(cfg), "sampling_seconds": round(sample_s, 3), "samples_dir": out.name}
    if cfg.get("task") is not None:
        # a domain's downstream task on the trained model (e.g. guided forecasting):
        # task(module, datamodule, run_dir) -> dict of floats, merged into the metrics
        task = _instantiate(cfg, "task")
        t0 = time.perf_counter()
        task_metrics = {k: float(v) for k, v in task(module, dm, run_dir).items()}
        metrics.update(task_metrics)
        report["task_seconds"] = round(time.perf_counter() - t0, 3)
    _write_report(report, out, run_dir)
    return metrics


def _cfg_for_run(overrides: list[str]) -> Any:
    """For sample/evaluate: the run's saved config, with the new overrides on top."""
    from omegaconf import OmegaConf

    run = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")), None)
    if run is None:
        raise ConfigError("sample/evaluate need run_dir=<a trained run directory>")
    saved = Path(run) / "config.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} not found: is {run} a workbench run directory?")
    base = OmegaConf.load(saved)
    root = functools.cache(compose_config)   # composed only if a key is missing from the saved config
    choices = [o for o in overrides if not o.startswith("run_dir=")]
    dotlist = []
    for o in choices:
        key, _, value = o.partition("=")
        group_file = Path(__file__).parent / "configs" / key.lstrip("+")
        if group_file.is_dir():  # a group choice such as sampler=dpm_solver
            grp = compose_config([f"{key.lstrip('+')}={value}"])
            OmegaConf.update(base, key.lstrip("+"), grp[key.lstrip("+")], merge=False, force_add=True)
            continue
        if not key.startswith("+") and all(OmegaConf.select(c, key, default="__absent__") == "__absent__"
                                           for c in (base, root())):
            # unknown to the run and to the current root config (a key added since the run was
            # saved, e.g. `checkpoint`, is accepted)
            raise ConfigError(f"unknown config key '{key}' (use +{key}=... to add one)")
        dotlist.append(f"{key.lstrip('+')}={value}")
    base = OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist))
    OmegaConf.update(base, "run_dir", str(Path(run).resolve()), force_add=True)
    return base


def demo(out: str | os.PathLike = "workbench-demo", tiny: bool | None = None) -> Path:
    """Train -> sample -> evaluate every demo experiment on embedded data; write ``report.md``."""
    from .data import atomic_write, write_json

    tiny = bool(int(os.environ.get(ENV_TINY, "0"))) if tiny is None else tiny
    out = Path(out).absolute()
    rows = []
    for exp, extra in demo_experiments(tiny):
        name = exp.replace("/", "_")
        run_dir = out / name
        overrides = [f"experiment={exp}", f"run_dir={run_dir}", "resume=false", *extra]
        t0 = time.perf_counter()
        try:
            cfg = compose_config(overrides)
            train(cfg)
            train_s = time.perf_counter() - t0
            metrics = evaluate(cfg)
        except ImportError as e:  # a domain whose optional extra is not installed
            mod = missing_module(e)
            if mod is None:
                raise DemoFailure(f"demo experiment {exp} failed: {type(e).__name__}: {e}") from e
            why = str(MissingExtra(mod, exp))
            print(f"workbench: skipping {exp}: {why}", file=sys.stderr)
            rows.append({"experiment": exp, "skipped": why, "metrics": {}, "train_seconds": 0.0, "plot": None})
            continue
        except (InputError, RunFailed):
            raise
        except Exception as e:  # noqa: BLE001 - a bug in a domain: name it, keep the traceback chained
            raise DemoFailure(f"demo experiment {exp} failed: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
        if not metrics or not all(math.isfinite(float(v)) for v in metrics.values()):
            raise DemoFailure(f"demo experiment {exp} evaluated to no finite metrics: {metrics!r}")
        wall = time.perf_counter() - t0
        plots = sorted(p.relative_to(out).as_posix() for p in (run_dir / "plots").glob("*.png"))
        rows.append({"experiment": exp, "train_seconds": round(train_s, 1), "wall_seconds": round(wall, 1),
                     "metrics": metrics, "plot": plots[0] if plots else None, "plots": plots})
        print(f"workbench: {exp} done in {wall:.1f} s (training {train_s:.1f} s)", file=sys.stderr)
    write_json(out / "report.json", {"versions": versions(), "tiny": tiny, "runs": rows})
    lines = ["# workbench demo report", "",
             f"{_dt.datetime.now():%Y-%m-%d %H:%M}, {'tiny' if tiny else 'demo'} budget, "
             f"torch {versions()['torch']} on {platform.machine()}.", ""]
    for r in rows:
        if r.get("skipped"):
            lines += [f"## {r['experiment']}", "", f"Skipped: {r['skipped']}", ""]
            continue
        lines += [f"## {r['experiment']}", "",
                  f"Wall time: {r['wall_seconds']} s (training {r['train_seconds']} s; sampling and evaluation the rest).", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in r["metrics"].items()]
        for plot in r.get("plots") or []:
            lines += ["", f"![{Path(plot).stem}]({plot})"]
        lines.append("")
    with atomic_write(out / "report.md") as f:
        f.write("\n".join(lines))
    print(f"workbench: demo report written to {out / 'report.md'}")
    return out / "report.md"


def demo_experiments(tiny: bool) -> list[tuple[str, list[str]]]:
    """(experiment, overrides) pairs run by ``workbench demo``: the core toy plus every domain's
    ``workbench.demos`` entry point (its name is the experiment, its value the domain package)."""
    budget = ["trainer.max_epochs=2", "sample.n=512", "sample.batch_size=512", "sample.steps=10"] if tiny \
        else ["trainer.max_epochs=20", "sample.steps=30"]
    exps = [("toy/gmm", ["trainer.enable_progress_bar=false", *budget])]
    for ep in sorted(metadata.entry_points(group="workbench.demos"), key=lambda e: e.name):
        extra = ["trainer.max_epochs=3", "sample.n=16", "sample.steps=10"] if tiny else []
        exps.append((ep.name, ["trainer.enable_progress_bar=false", *extra]))
    return exps


USAGE = __doc__.split("\n\n")[1] if __doc__ else ""

VERBS = {
    "train": "train a model from a config (resumes a run directory's last.ckpt)",
    "sample": "draw samples from a trained run (run_dir=...)",
    "evaluate": "sample and score a trained run against its reference (run_dir=...)",
    "demo": "train, sample and evaluate every installed domain on embedded data; writes a report",
    "list": "the experiments of every installed domain and the config groups with their choices",
    "show": "one experiment (experiment=...): its data keys with their defaults, then the whole config",
}


def _config_roots() -> list[Any]:
    """The core's config package and every installed domain's, as importlib.resources traversables."""
    from importlib import resources

    roots = []
    for pkg in ["workbench.configs", *config_packages()]:
        try:
            roots.append(resources.files(pkg))
        except (ModuleNotFoundError, TypeError):  # an announced domain that is not importable
            continue
    return roots


def _describe(text: str) -> str:
    """The first comment sentence of a config file (after ``# @package``)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith("@package"):
            continue
        lines.append(body)
    desc = " ".join(lines)
    cut = desc.find(". ")
    desc = desc[: cut + 1] if cut >= 0 else desc
    return desc if len(desc) <= 100 else desc[:100].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def list_experiments() -> dict[str, str]:
    """``{"graphs/qm9": "one line", ...}`` for every installed experiment (``_*`` bases excluded)."""
    out: dict[str, str] = {}
    for root in _config_roots():
        exp = root / "experiment"
        if not exp.is_dir():
            continue
        for domain in sorted(exp.iterdir(), key=lambda p: p.name):
            if not domain.is_dir() or domain.name.startswith(("_", ".")):
                continue
            for f in sorted(domain.iterdir(), key=lambda p: p.name):
                if f.name.endswith(".yaml") and not f.name.startswith("_"):
                    out[f"{domain.name}/{f.name[:-5]}"] = _describe(f.read_text())
    return dict(sorted(out.items()))


def list_groups() -> dict[str, list[str]]:
    """The core's config groups and their choices."""
    from importlib import resources

    root = resources.files("workbench.configs")
    return {g.name: sorted(f.name[:-5] for f in g.iterdir() if f.name.endswith(".yaml"))
            for g in sorted(root.iterdir(), key=lambda p: p.name)
            if g.is_dir() and g.name not in ("experiment", "__pycache__")}


def _experiment_lines(indent: str = "") -> list[str]:
    exps = list_experiments()
    width = max((len(k) for k in exps), default=0)
    return [f"{indent}{k:<{width}}  {v}" for k, v in exps.items()]


def _group_lines() -> list[str]:
    return [f"  {g:<10} {', '.join(c)}" for g, c in list_groups().items()]


def _experiment_arg(args: Sequence[str]) -> str | None:
    """The value of ``experiment=`` (or ``+experiment=``) among command-line overrides."""
    return next((a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+") == "experiment"),
                None)


def _help() -> str:
    lines = ["usage: workbench <command> [key=value ...]", "", "commands:"]
    lines += [f"  {v:<9} {d}" for v, d in VERBS.items()]
    lines += ["", "examples:", *("  " + ln.strip() for ln in USAGE.strip().splitlines()), "",
              "experiments (experiment=<name>; `workbench show experiment=<name>` for its keys):"]
    lines += _experiment_lines("  ")
    lines += ["", "config groups (<group>=<choice>):", *_group_lines()]
    lines += ["", "Any key of the composed config can be overridden with key=value (+key=value adds one);",
              "`workbench --debug <command>` shows full tracebacks."]
    return "\n".join(lines)


def show(overrides: Sequence[str]) -> str:
    """The data keys (``datamodule.*``) of a composed experiment with their defaults, then the whole
    config as YAML."""
    from omegaconf import OmegaConf

    overrides = [o for o in overrides if o not in ("--help", "-h")]
    exp = _experiment_arg(overrides)
    if exp is None:
        raise ConfigError("show needs experiment=<name> (`workbench list` lists them)")
    cfg = compose_config(overrides)
    dm = OmegaConf.to_container(cfg.datamodule, resolve=False) if cfg.get("datamodule") is not None else {}
    lines = [f"experiment: {exp}", "", "data keys (datamodule.<key>=..., null = not set / the dataset's own):"]
    if isinstance(dm, dict):
        width = max((len(k) for k in dm), default=0)
        lines += [f"  {k:<{width}}  {v!r}" for k, v in dm.items() if k != "_target_"]
        lines.insert(2, f"datamodule: {dm.get('_target_')}")
    lines += ["", "whole config:", OmegaConf.to_yaml(cfg, resolve=False)]
    return "\n".join(lines)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help())
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd in VERBS and any(a in ("--help", "-h") for a in rest):
            if _experiment_arg(rest) is not None and cmd in ("train", "show"):
                print(show(rest))
            else:
                print(f"workbench {cmd}: {VERBS[cmd]}\n\n" + _help())
            return 0
        if cmd == "list":
            print("\n".join(_experiment_lines()))
            print("\nconfig groups:\n" + "\n".join(_group_lines()))
            return 0
        if cmd == "show":
            print(show(rest))
            return 0
        if cmd == "train":
            run_dir = train(compose_config(rest))
            print(f"workbench: run directory {run_dir}")
        elif cmd == "sample":
            sample(_cfg_for_run(rest))
        elif cmd == "evaluate":
            metrics = evaluate(_cfg_for_run(rest))
            print(json.dumps(metrics, indent=2))
        elif cmd == "demo":
            out = "workbench-demo"
            if "--out" in rest:
                out = rest[rest.index("--out") + 1]
            demo(out, tiny=True if "--tiny" in rest else None)
        else:
            print(f"workbench: error: unknown command {cmd!r}; use {', '.join(VERBS)} (workbench --help)",
                  file=sys.stderr)
            return 2
    except (InputError, MissingExtra, RunFailed, DemoFailure, FileNotFoundError, FloatingPointError) as e:
        # the user's file / value / config key or a missing extra (exit 2); nothing usable produced:
        # a non-finite loss or samples, nothing to train on, a diverged guided forecast, a failing
        # demo domain (exit 1). Anything else is a bug and keeps its traceback.
        if debug:
            raise
        code = 1 if isinstance(e, (RunFailed, DemoFailure, FloatingPointError)) else 2
        text = _first_line(e) if isinstance(e, (InputError, MissingExtra, RunFailed)) else str(e)
        hint = " (run `workbench --debug demo ...` for the traceback)" if isinstance(e, DemoFailure) else ""
        print(f"workbench: error: {text}{hint}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Windows, lags, scaling, the named datasets and the Lightning data module of TSDiff.

A training item is one window of ``context_length + prediction_length`` steps cut at a uniformly
drawn position of a uniformly drawn (series, position) pair (GluonTS's
``ExpectedNumInstanceSampler(num_instances=1)`` draws each valid position with equal
probability). It is divided by the *mean scale* of its context (mean |value| over the
observed context steps, TSDiff's ``MeanScaler``), and gets one extra channel per lag
(value ``lag`` steps earlier, scaled alike; TSDiff denoises the lag channels too).

``x`` is ``[L, 1 + n_lags]``; ``mask`` has the same shape and is 0 where a value is missing
(NaN in the data, or lag history before the start of the series). The core's masked
geometry puts no noise there and excludes those entries from the loss.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from workbench.data import DomainDataModule, find_data
from workbench.errors import ConfigError, check_int

from .io import (DataError, TimeSeries, TimeSeriesDataset, normalize_freq, read_csv, read_gluonts, read_jsonl, read_m4,
                 read_wide_csv, rolling_test)

__all__ = ["lags_for_freq", "mean_scale", "window", "DATASETS", "FREQ", "dataset_freq", "window_channels",
           "load_dataset", "synthetic_dataset",
           "split_validation", "val_windows_per_series", "WindowDataset", "TimeSeriesDataModule"]


def lags_for_freq(freq: str) -> list[int]:
    """TSDiff's lags (``get_lags_for_freq``): hourly 24 x [1..7, 14, 21, 28]; daily and
    business-daily 30 x [1..12]. Other frequencies have none."""
    import pandas as pd

    off = pd.tseries.frequencies.to_offset(normalize_freq(freq))
    if off.n != 1:
        raise ValueError(f"lags are defined for unit frequencies only, got {freq!r}")
    name = off.name.upper()
    if name == "H":
        return [24 * i for i in (1, 2, 3, 4, 5, 6, 7, 14, 21, 28)]
    if name in ("D", "B"):
        return [30 * i for i in range(1, 13)]
    raise ValueError(f"TSDiff defines lags for hourly, daily and business-day data only, not {freq!r}; "
                     "set use_lags=false")


def mean_scale(values: np.ndarray, observed: np.ndarray, fallback: float = 1.0, minimum: float = 1e-10) -> float:
    """Mean |value| over observed entries (TSDiff's / GluonTS's ``MeanScaler``); ``fallback``
    when nothing non-zero is observed."""
    w = observed.astype(bool)
    s = float(np.abs(values[w]).sum())
    if s <= 0:
        return max(fallback, minimum)
    return max(s / max(int(w.sum()), 1), minimum)


def window(series: np.ndarray, end: int, length: int, lags: list[int], context_length: int,
           fallback_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """The window ``series[end - length : end]`` with lag channels, scaled by its context.

    Args:
        series: ``[T]`` values, NaN = missing. ``end`` may exceed T (the forecast horizon of a
            test window): those steps come out as 0 with mask 0.
        length: C + P.
        lags: lag offsets (channel j + 1 holds the value ``lags[j]`` steps earlier).
        context_length: C; the scale is the mean |value| over observed context steps.

    Returns:
        ``x [length, 1 + len(lags)]`` (scaled, missing -> 0), ``mask`` (same shape, 1 = observed)
        and the scale.
    """
    offsets = [0] + list(lags)
    idx = np.arange(end - length, end)[:, None] - np.asarray(offsets)[None, :]
    valid = (idx >= 0) & (idx < len(series))
    vals = np.where(valid, series[np.clip(idx, 0, max(len(series) - 1, 0))], np.nan)
    mask = ~np.isnan(vals)
    ctx = vals[:context_length, 0]
    scale = mean_scale(np.nan_to_num(ctx), mask[:context_length, 0], fallback_scale)
    x = np.where(mask, vals, 0.0) / scale
    return x.astype(np.float32), mask.astype(np.float32), scale


# -- named datasets ---------------------------------------------------------------------------
#: The frequency of each named dataset, known before any data is read: it fixes the lag channels,
#: so the network's input width (:func:`window_channels`) is derived from the config alone.
FREQ: dict[str, str] = {
    "synthetic": "H", "m4_hourly": "H", "exchange_rate_nips": "B", "exchange_rate": "B", "etth1": "H",
    "solar_nips": "H", "electricity_nips": "H", "traffic_nips": "H", "wiki2000_nips": "D",
    "uber_tlc_hourly": "H", "kdd_cup_2018_without_missing": "H",
}


def _m4() -> TimeSeriesDataset:
    tr = find_data("timeseries/m4_Hourly-train.csv", "the M4 Hourly CSVs (see timeseries/SOURCES.md)")
    te = find_data("timeseries/m4_Hourly-test.csv", "the M4 Hourly CSVs (see timeseries/SOURCES.md)")
    return read_m4(tr, te, freq=FREQ["m4_hourly"], prediction_length=48, name="m4_hourly")


def _exchange_nips() -> TimeSeriesDataset:
    p = find_data("timeseries/exchange_rate_nips.tar.gz", "GluonTS's exchange_rate_nips archive")
    return read_gluonts(p, freq=FREQ["exchange_rate_nips"], prediction_length=30, name="exchange_rate_nips")


def _exchange_lstnet() -> TimeSeriesDataset:
    p = find_data("timeseries/exchange_rate.txt.gz", "LSTNet's exchange_rate.txt.gz")
    return read_wide_csv(p, freq=FREQ["exchange_rate"], prediction_length=30, windows=5, header=False,
                         name="exchange_rate")


def _etth1() -> TimeSeriesDataset:
    p = find_data("timeseries/ETTh1.csv", "ETTh1.csv from the ETDataset repository")
    # Informer's test period ends at row 14400; 7 rolling day-ahead windows at its end.
    return read_wide_csv(p, freq=FREQ["etth1"], prediction_length=24, windows=7, columns=["OT"], date_column="date",
                         end=14400, name="etth1")


def synthetic_dataset(n_series: int = 32, length: int = 24 * 7 * 6, *, prediction_length: int = 24,
                      windows: int = 2, freq: str = "H", seed: int = 0, name: str = "synthetic_hourly") -> TimeSeriesDataset:
    """The embedded default: positive hourly series with daily and weekly seasonality, a slow
    trend, a level per series and multiplicative noise (deterministic from ``seed``). Needs no
    download; the demo, the notebook and the tests run on it."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(length + prediction_length * windows)
    series = []
    for i in range(n_series):
        level = rng.uniform(5, 50)
        day = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * (t / 24 + rng.uniform()))
        week = rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * (t / 168 + rng.uniform()))
        trend = rng.uniform(-0.2, 0.2) * t / len(t)
        noise = rng.normal(0, rng.uniform(0.03, 0.1), len(t))
        y = level * np.exp(day + week + trend + noise)
        series.append(TimeSeries(y.astype(np.float32), pd.Timestamp("2024-01-01"), normalize_freq(freq), f"S{i}"))
    train, test = rolling_test(series, prediction_length, windows)
    return TimeSeriesDataset(name, normalize_freq(freq), prediction_length, train, test, "generated")


DATASETS: dict[str, Callable[[], TimeSeriesDataset]] = {
    "synthetic": synthetic_dataset,
    "m4_hourly": _m4,
    "exchange_rate_nips": _exchange_nips,
    "exchange_rate": _exchange_lstnet,
    "etth1": _etth1,
}
# The paper's other datasets; GluonTS downloads them, the shared data folder lacks them.
PAPER_ONLY = {
    "solar_nips": "solar_nips.tar.gz", "electricity_nips": "electricity_nips.tar.gz",
    "traffic_nips": "traffic_nips.tar.gz", "wiki2000_nips": "wiki2000_nips.tar.gz",
    "uber_tlc_hourly": "uber_tlc_hourly (GluonTS json folder)",
    "kdd_cup_2018_without_missing": "kdd_cup_2018_without_missing (GluonTS json folder)",
}


def _form(path: Path) -> str:
    """``gluonts`` (a folder or tar archive), ``jsonl`` or ``csv``, by the file's form, not its name alone."""
    import gzip
    import tarfile

    if path.is_dir():
        return "gluonts"
    try:
        if tarfile.is_tarfile(path):
            return "gluonts"
    except (OSError, EOFError):
        pass
    low = path.name.lower()
    if low.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return "gluonts"  # not a tar archive after all: read_gluonts says so, naming the file
    try:
        with (gzip.open(path, "rt", errors="replace") if low.endswith(".gz") else
              open(path, encoding="utf-8", errors="replace")) as fh:
            head = fh.read(4096).lstrip()
    except (OSError, EOFError):
        return "csv"
    return "jsonl" if head.startswith("{") else "csv"


def load_path(path: str | os.PathLike, *, prediction_length: int | None = None, freq: str | None = None,
              test_windows: int | None = None, date_column: str | None = None) -> TimeSeriesDataset:
    """A dataset from a path, recognised by its form: a GluonTS folder or ``.tar.gz`` (metadata,
    train, test), a GluonTS JSON-lines file (one series per line; needs ``freq``), or a CSV (one
    series per column, a date column or ``freq``). The JSON-lines and CSV forms get the rolling
    test split: the last ``prediction_length * test_windows`` points of each series (default 1 window)."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or folder (datamodule.dataset)", file=p)
    form = _form(p)
    if form == "gluonts":
        if p.is_dir() and not any(p.glob("train/*.json*")) and not any(p.glob("*/train/*.json*")):
            raise DataError("a folder given as the dataset must be a GluonTS dataset with train/*.json "
                            "(and metadata/, test/); give a CSV or JSON-lines file directly", file=p)
        return read_gluonts(p, freq=freq, prediction_length=prediction_length)
    if prediction_length is None:
        raise ConfigError(f"datamodule.prediction_length must be set for the {form.upper()} file {p} (the "
                          "horizon of its test windows; GluonTS folders carry it in their metadata)")
    windows = 1 if test_windows is None else test_windows
    if form == "jsonl":
        if freq is None:
            raise ConfigError(f"datamodule.freq must be set for the JSON-lines file {p} (e.g. H, D, B; GluonTS "
                              "folders carry it in their metadata)")
        series = read_jsonl(p, freq)
        train, test = rolling_test(series, prediction_length, windows, name=p)
        return TimeSeriesDataset(p.name.split(".")[0], series[0].freq, int(prediction_length), train, test, str(p))
    return read_csv(p, prediction_length=prediction_length, windows=windows, freq=freq, date_column=date_column)


def load_dataset(name: str | TimeSeriesDataset, **path_options: Any) -> TimeSeriesDataset:
    """A named dataset (``synthetic``, ``m4_hourly``, ``exchange_rate_nips``, ``exchange_rate``,
    ``etth1``, or a paper dataset as a GluonTS folder/archive under
    ``$WORKBENCH_DATA/timeseries/``), a path (a GluonTS folder/archive, a JSON-lines file or a
    CSV: :func:`load_path`, which takes ``path_options``), or a dataset."""
    if isinstance(name, TimeSeriesDataset):
        return name
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"datamodule.dataset must be a dataset name or a path, got {name!r}")
    name = str(name)
    if name in DATASETS:
        return DATASETS[name]()
    if name in PAPER_ONLY:
        for cand in (f"timeseries/{name}.tar.gz", f"timeseries/{name}"):
            try:
                return read_gluonts(find_data(cand), name=name)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(
            f"dataset {name!r} is not in $WORKBENCH_DATA/timeseries/ (expected {PAPER_ONLY[name]}); GluonTS "
            f"publishes it (gluonts.dataset.repository.get_dataset({name!r})): save it there as a GluonTS "
            "folder or .tar.gz")
    if os.path.exists(name):
        return load_path(name, **path_options)
    raise DataError(f"unknown time-series dataset {name!r} (datamodule.dataset): no such file, and not one of "
                    f"{sorted(DATASETS) + sorted(PAPER_ONLY)}; give a name, or a path to a CSV, a JSON-lines "
                    "file or a GluonTS folder")


def dataset_freq(dataset: str | TimeSeriesDataset, freq: str | None = None, **path_options: Any) -> str:
    """The frequency of a dataset: ``freq`` when given, from :data:`FREQ` for a named one (nothing
    is read), else of the loaded data (a path, or a :class:`TimeSeriesDataset`)."""
    if isinstance(dataset, TimeSeriesDataset):
        return dataset.freq
    if isinstance(dataset, str) and dataset in FREQ:
        return FREQ[dataset]
    if freq is not None:
        return normalize_freq(freq)
    return load_dataset(dataset, **path_options).freq


def window_channels(dataset: str | TimeSeriesDataset, use_lags: bool, freq: str | None = None,
                    **path_options: Any) -> int:
    """Channels of a window of ``dataset``: the value plus one per TSDiff lag of its frequency
    (``1 + len(lags_for_freq(freq))``, or 1 without lags). The configs give it to the network as
    its ``input_dim``, from the datamodule's ``dataset``, ``use_lags`` and ``freq`` (and, for a
    file, the options that read it), so the two agree."""
    if not use_lags:
        return 1
    f = dataset_freq(dataset, freq, **path_options)
    try:
        return 1 + len(lags_for_freq(f))
    except ValueError as e:
        raise ConfigError(f"datamodule.use_lags: {e}") from None


#: ``val_windows: null`` (auto) aims at this many validation windows in total ...
VAL_TARGET_WINDOWS = 64
#: ... with no series giving up more than this share of its points to validation.
VAL_MAX_SHARE = 0.2


def val_windows_per_series(train: list[TimeSeries], prediction_length: int, min_length: int,
                           windows: int | None) -> list[int]:
    """How many validation horizons each train series gives up.

    ``windows`` = k: k per series, fewer for a series that must keep ``min_length`` (C + P)
    points for training. ``None`` (auto): ``ceil(VAL_TARGET_WINDOWS / n_series)`` per series (64
    windows in total: 64 of a single series such as ETTh1's OT, 2 per series of the 32 synthetic
    ones, 1 per series from 64 series on), and no series gives up more than ``VAL_MAX_SHARE`` of
    its points, nor the ``min_length`` it keeps for training."""
    P = int(prediction_length)
    if windows is not None and windows <= 0:
        return [0] * len(train)
    want = math.ceil(VAL_TARGET_WINDOWS / max(len(train), 1)) if windows is None else int(windows)
    out = []
    for s in train:
        k = min(want, max((len(s) - min_length) // P, 0))
        if windows is None:
            k = min(k, int(VAL_MAX_SHARE * len(s)) // P)
        out.append(k)
    return out


def split_validation(train: list[TimeSeries], prediction_length: int, windows: int | None,
                     min_length: int) -> tuple[list[TimeSeries], list[TimeSeries]]:
    """Hold out the last horizons of each train series for validation, rolling back from the test start.

    Series i gives up its last ``k_i * prediction_length`` points (``k_i`` from
    :func:`val_windows_per_series`; a train series ends where its first test window starts), and
    gets ``k_i`` validation entries whose last P points (the validation horizons) tile that
    held-out stretch without overlapping. Training windows are cut from the shortened series
    only, so they never see a validation horizon; a validation entry's context may hold older
    validation horizons, as a later test window's holds earlier ones.

    Returns (shortened train, validation entries). The entries are ordered by distance from the
    test start, then by series: first the horizon just before the test start of every series,
    then the one before it, and so on, so that the first n entries spread over the series.
    """
    P = int(prediction_length)
    return _hold_out(train, P, val_windows_per_series(train, P, min_length, windows))


def _hold_out(train: list[TimeSeries], P: int, ks: list[int]) -> tuple[list[TimeSeries], list[TimeSeries]]:
    """:func:`split_validation` for given windows per series ``ks``."""
    short = [s if k == 0 else TimeSeries(s.target[: len(s) - P * k], s.start, s.freq, s.item_id)
             for s, k in zip(train, ks)]
    val = [TimeSeries(train[i].target[: len(train[i]) - P * back], train[i].start, train[i].freq, train[i].item_id)
           for i, back in val_order(ks)]
    return short, val


def val_order(ks: list[int]) -> list[tuple[int, int]]:
    """(series index, horizons back from the test start) of each validation entry, in the order
    of :func:`split_validation` (``ks``: windows per series)."""
    return [(i, back) for back in range(max(ks, default=0)) for i, k in enumerate(ks) if back < k]


class WindowDataset(Dataset):
    """Training windows: item k is the k-th valid (series, end) pair, in series order.

    Args:
        series: the series to cut.
        context_length, prediction_length: C and P.
        lags: lag offsets.
    """

    def __init__(self, series: list[TimeSeries], context_length: int, prediction_length: int,
                 lags: list[int]) -> None:
        self.series = series
        self.C, self.P, self.lags = int(context_length), int(prediction_length), list(lags)
        L = self.C + self.P
        counts = np.array([max(len(s) - L + 1, 0) for s in series])
        if counts.sum() == 0:
            longest = max((len(s) for s in series), default=0)
            raise DataError(f"no series is long enough for context {self.C} + prediction {self.P} = {L} steps "
                            f"(longest: {longest}); shorten context_length")
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.fallback = [mean_scale(np.nan_to_num(s.target), ~np.isnan(s.target)) for s in series]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(np.searchsorted(self.offsets, k, side="right") - 1)
        end = self.C + self.P + (k - int(self.offsets[i]))
        x, m, scale = window(self.series[i].target, end, self.C + self.P, self.lags, self.C, self.fallback[i])
        return {"x": torch.from_numpy(x), "mask": torch.from_numpy(m), "scale": torch.tensor(scale)}


class RandomDrawSampler(Sampler[int]):
    """``num_samples`` indices drawn with replacement, seeded by (seed, epoch): TSDiff's fixed
    number of batches per epoch of randomly placed windows, reproducible and resumable."""

    def __init__(self, n: int, num_samples: int, seed: int = 0) -> None:
        self.n, self.num_samples, self.seed, self.epoch = int(n), int(num_samples), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randint(self.n, (self.num_samples,), generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class TimeSeriesDataModule(DomainDataModule):
    """TSDiff's data: windows of C + P steps, mean-scaled on the context, with lag channels.

    Args:
        dataset: a name (see :func:`load_dataset`), a path (a CSV, a JSON-lines file or a GluonTS
            folder/archive, recognised by its form), or a :class:`TimeSeriesDataset`.
        context_length: C.
        prediction_length: P (default: the dataset's; required for a CSV or JSON-lines file).
        freq: the frequency of a JSON-lines file, or of a CSV without a date column (``"H"``, ``"D"`` ...).
        date_column: the CSV's timestamp column (default: the first column, when it looks like one).
        test_windows: rolling test windows cut from the end of a CSV / JSON-lines file (default 1).
        use_lags: add TSDiff's lag channels for the frequency.
        batch_size: windows per batch (TSDiff: 64).
        batches_per_epoch: windows drawn per epoch = ``batches_per_epoch * batch_size`` (TSDiff: 128).
        val_windows: validation windows per series: the last horizons of each train series, rolling
            back from the test start, held out from training (0 = none; None = auto, enough for 64
            windows in total, each series giving up at most a fifth of its points; see
            :func:`split_validation`).
        val_batches: the validation *loss* (Lightning's ``val/loss``) uses at most this many batches of
            those windows, drawn once with a fixed seed; the forecast validation
            (:class:`~.validation.ForecastValidation`) has its own ``max_windows`` / ``max_series``.
        limit: keep only the first ``limit`` series (for quick runs).
    """

    def __init__(self, dataset: Any = "synthetic", context_length: int = 336, prediction_length: int | None = None,
                 use_lags: bool = True, batch_size: int = 64, batches_per_epoch: int = 128, val_windows: int | None = None,
                 val_batches: int = 4, limit: int | None = None, num_workers: int = 0, seed: int = 0,
                 freq: str | None = None, date_column: str | None = None, test_windows: int | None = None) -> None:
        k = "datamodule."
        batch_size = check_int(batch_size, k + "batch_size", minimum=1)
        num_workers = check_int(num_workers, k + "num_workers", minimum=0)
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset is None:
            raise ConfigError("datamodule.dataset must be set: a dataset name, or a path to a CSV, a JSON-lines "
                              "file or a GluonTS folder")
        self.dataset_spec = dataset
        self.context_length = check_int(context_length, k + "context_length", minimum=1)
        self._prediction_length = check_int(prediction_length, k + "prediction_length", minimum=1, allow_none=True)
        if not isinstance(use_lags, (bool, np.bool_)):
            raise ConfigError(f"config key 'datamodule.use_lags' must be true or false, got {use_lags!r}")
        self.use_lags = bool(use_lags)
        self.batches_per_epoch = check_int(batches_per_epoch, k + "batches_per_epoch", minimum=1)
        self.val_windows = check_int(val_windows, k + "val_windows", minimum=0, allow_none=True)
        self.val_batches = check_int(val_batches, k + "val_batches", minimum=1)
        self.limit = check_int(limit, k + "limit", minimum=1, allow_none=True)
        self.test_windows = check_int(test_windows, k + "test_windows", minimum=1, allow_none=True)
        if freq is not None:
            try:
                normalize_freq(str(freq))
            except DataError as e:
                raise ConfigError(f"config key 'datamodule.freq': {e}") from None
        self.freq, self.date_column = None if freq is None else str(freq), date_column
        self.dataset: TimeSeriesDataset | None = None

    @property
    def path_options(self) -> dict[str, Any]:
        """How a CSV / JSON-lines / GluonTS path is read (see :func:`load_path`)."""
        return {"prediction_length": self._prediction_length, "freq": self.freq, "test_windows": self.test_windows,
                "date_column": self.date_column}

    # -- setup -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        ds = load_dataset(self.dataset_spec, **self.path_options)
        if self.limit is not None:
            if self.limit > len(ds.train):
                raise ConfigError(f"config key 'datamodule.limit' is {self.limit}, but {ds.name} has only "
                                  f"{len(ds.train)} train series; lower it or set it to null (all)")
            keep = {s.item_id for s in ds.train[: int(self.limit)]}
            ds = TimeSeriesDataset(ds.name, ds.freq, ds.prediction_length, ds.train[: int(self.limit)],
                                   [s for s in ds.test if s.item_id in keep], ds.source)
        self.dataset = ds
        self.prediction_length = int(self._prediction_length or ds.prediction_length)
        if self.prediction_length != ds.prediction_length:
            raise ConfigError(f"config key 'datamodule.prediction_length' is {self.prediction_length}, but the "
                              f"dataset {ds.name} is split for {ds.prediction_length}; leave it null for this dataset")
        try:
            self.lags = lags_for_freq(ds.freq) if self.use_lags else []
        except ValueError as e:
            raise ConfigError(f"config key 'datamodule.use_lags': {e}") from None
        spec = self.dataset_spec
        if self.use_lags and isinstance(spec, str) and spec in FREQ and self.lags != lags_for_freq(FREQ[spec]):
            raise DataError(f"{ds.name}: the data's frequency {ds.freq!r} has other lags than the registered "
                            f"{FREQ[spec]!r} (FREQ in {__name__}), which sized the network")
        L = self.context_length + self.prediction_length
        short = [s.item_id for s in ds.test if len(s) < L]
        if short:
            raise DataError(f"{ds.name}: {len(short)} test series are shorter than context + prediction = {L} "
                            f"(e.g. {short[:3]}); shorten context_length")
        for s in ds.train + ds.test:
            if np.isnan(s.target).all():
                raise DataError(f"{ds.name}: series {s.item_id!r} has no observed values")
        ks = val_windows_per_series(ds.train, self.prediction_length, L, self.val_windows)
        train, val = _hold_out(ds.train, self.prediction_length, ks)
        self.train_series, self.val_series = train, val
        #: per validation entry: (index of its series in ``dataset.train``, horizons back from the test start)
        self.val_index = val_order(ks)
        self.train_set = WindowDataset(train, self.context_length, self.prediction_length, self.lags)
        self.val_set = None
        if val:
            # the validation windows: the last C + P steps of each validation entry
            items = [self.window_of(s) for s in val]
            g = np.random.default_rng(12345)
            keep = g.permutation(len(items))[: self.val_batches * self.batch_size]
            self.val_set = [items[i] for i in sorted(keep)]

    @property
    def input_dim(self) -> int:
        """Channels of a window (see :func:`window_channels`)."""
        if self.dataset is not None:
            return window_channels(self.dataset, self.use_lags)
        return window_channels(self.dataset_spec, self.use_lags, **self.path_options)

    def window_of(self, s: TimeSeries, *, horizon_known: bool = True) -> dict[str, torch.Tensor]:
        """The last C + P steps of ``s`` as an item (``horizon_known=False`` hides the last P).

        ``mask`` is the existence mask of the core's mask rule: 0 on missing values (and, with the
        horizon hidden, on the horizon), which then get no loss; guided forecasting uses the same
        values as its observation mask (:meth:`TSDiff.observe`)."""
        L = self.context_length + self.prediction_length
        target = s.target if horizon_known else s.target[: len(s) - self.prediction_length]
        x, m, scale = window(target, len(s), L, self.lags, self.context_length)
        return {"x": torch.from_numpy(x), "mask": torch.from_numpy(m), "scale": torch.tensor(scale)}

    def train_dataloader(self) -> DataLoader:
        sampler = RandomDrawSampler(len(self.train_set), self.batches_per_epoch * self.batch_size, self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_set:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)

    # -- what the core asks ------------------------------------------------------------------------
    def sample_template(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        L = self.context_length + self.prediction_length
        return {"x": torch.zeros(n, L, 1 + len(self.lags)), "mask": torch.ones(n, L, 1 + len(self.lags))}

    def reference(self) -> torch.Tensor:
        """Real windows (scaled, with lags) from the training series: the last C + P steps of each."""
        return torch.stack([self.window_of(s)["x"] for s in self.train_series])

    def save_samples(self, samples: Any, directory: str | os.PathLike) -> list[Path]:
        """Synthetic windows as a CSV (one row per window, mean-scaled target channel) and a ``.pt``."""
        from workbench.data import atomic_write, save_tensors

        d = Path(directory)
        x = samples[..., 0].detach().cpu().numpy()
        with atomic_write(d / "samples.csv") as fh:
            fh.write(",".join(f"t{i}" for i in range(x.shape[1])) + "\n")
            for row in x:
                fh.write(",".join(f"{v:.6g}" for v in row) + "\n")
        save_tensors(d / "samples.pt", samples)
        return [d / "samples.csv", d / "samples.pt"]

    def observations(self, n: int, batch_size: int) -> Iterator[dict[str, Any]]:
        """The first ``n`` test windows as (observation, truth) pairs for ``workbench evaluate
        guidance=...``: the truth is the window with its horizon, the observation ``y`` the same
        window with the horizon hidden (:meth:`window_of`), observed where ``obs_mask`` is 1 (a
        :class:`~workbench.operators.Mask`); mean-scaled units, as the model sees them. No
        quantile levels: TSDiff-Q (a level per sample) stays the experiment's ``task``."""
        from workbench.errors import DataError
        from workbench.operators import Mask

        entries = list(self.dataset.test)[: int(n)]
        if not entries:
            raise DataError("no test series to condition on", file=self.dataset.source or self.dataset.name)
        for i in range(0, len(entries), int(batch_size)):
            chunk = entries[i:i + int(batch_size)]
            obs = [self.window_of(s, horizon_known=False) for s in chunk]
            y, m = torch.stack([o["x"] for o in obs]), torch.stack([o["mask"] for o in obs])
            truth = torch.stack([self.window_of(s)["x"] for s in chunk])
            yield {"x": truth, "observation": {"y": y, "obs_mask": m, "operator": Mask(m)}}

    def conditional_metrics(self, mean: Any, truth: Any, samples: Any) -> dict[str, float]:
        """Scores of the horizon (target channel, last P steps) in mean-scaled units: the core's
        defaults (RMSE / MAE of the mean, +-2 std coverage) and the sample metrics CRPS / ND /
        NRMSE (:func:`~workbench.domains.timeseries.metrics.forecast_metrics`; the ``task``
        reports them in the data's units)."""
        from workbench.conditional import default_metrics

        from .metrics import forecast_metrics

        C = self.context_length
        out = default_metrics(mean[:, C:, 0], truth[:, C:, 0], samples[:, :, C:, 0])
        fm = forecast_metrics(samples[:, :, C:, 0].transpose(0, 1).numpy(), truth[:, C:, 0].numpy())
        out.update({f"scaled/{k}": v for k, v in fm.items() if k in ("CRPS", "ND", "NRMSE")})
        return out

    def plot_samples(self, samples: Any, path: str | os.PathLike) -> Path | None:
        from .plots import plot_windows

        return plot_windows(samples, self.reference(), path, context_length=self.context_length)

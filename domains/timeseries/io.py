"""Reading time series the GluonTS way, without GluonTS.

A dataset is a list of univariate series, each with a ``start`` timestamp, a pandas frequency
string and a ``target`` array, plus a prediction length and a test split made of rolling
windows (each test entry is a train series extended by one more horizon; the last
``prediction_length`` points of a test entry are what is forecast).

Readers:

* :func:`read_jsonl` / :func:`read_gluonts` -- GluonTS's own JSON-lines format, as a folder or as
  the ``*_nips.tar.gz`` archives (``metadata/metadata.json``, ``train/*.json``, ``test/*.json``).
* :func:`read_m4` -- the M4 competition CSVs (one row per series, right-padded with empty cells).
* :func:`read_wide_csv` -- one column per series (ETTh1, the LSTNet ``exchange_rate.txt.gz``).
* :func:`from_pandas` -- a pandas Series or DataFrame with a regular DatetimeIndex.

Missing values (NaN, or empty cells) are kept as NaN in ``target``; the data module turns them
into an observed-value mask, so they are neither trained on nor guided towards. Irregular
timestamps are an error (resample first). Files are parsed, never unpickled.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable

import numpy as np

__all__ = ["TimeSeries", "TimeSeriesDataset", "DataError", "read_jsonl", "read_gluonts", "read_m4",
           "read_wide_csv", "from_pandas", "rolling_test", "normalize_freq"]


class DataError(ValueError):
    """A time-series file or object that cannot be used; the message names it and the problem."""


# GluonTS / pandas frequency aliases that pandas >= 2.2 renamed.
_FREQ_ALIASES = {"H": "h", "1H": "h", "T": "min", "1T": "min", "S": "s", "1B": "B", "1D": "D", "D": "D",
                 "B": "B", "W": "W", "M": "ME", "1M": "ME", "Q": "QE", "Y": "YE", "A": "YE", "30min": "30min"}


def normalize_freq(freq: str) -> str:
    """A pandas 2.x offset alias for a GluonTS-style frequency string (``"H"`` -> ``"h"``)."""
    import pandas as pd

    f = _FREQ_ALIASES.get(str(freq), str(freq))
    try:
        pd.tseries.frequencies.to_offset(f)
    except ValueError as e:
        raise DataError(f"unknown frequency {freq!r}: {e}") from None
    return f


@dataclass
class TimeSeries:
    """One univariate series.

    Attributes:
        target: ``[T]`` float32 values; NaN marks a missing observation.
        start: timestamp of ``target[0]`` (a pandas Timestamp).
        freq: pandas frequency alias (``"h"``, ``"B"``, ``"D"`` ...).
        item_id: a name for messages, plots and the forecast table.
    """

    target: np.ndarray
    start: Any
    freq: str
    item_id: str = ""

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.target)

    def index(self, offset: int = 0, length: int | None = None) -> Any:
        """The DatetimeIndex of ``target[offset:offset + length]``."""
        import pandas as pd

        n = len(self) - offset if length is None else length
        first = pd.Timestamp(self.start) + offset * pd.tseries.frequencies.to_offset(self.freq)
        return pd.date_range(first, periods=n, freq=self.freq)


@dataclass
class TimeSeriesDataset:
    """Train and test series of one benchmark.

    Attributes:
        name: dataset name.
        freq: pandas frequency alias.
        prediction_length: the forecast horizon P.
        train: series to train on.
        test: test entries; the last P points of each are forecast (GluonTS ``TestSplitSampler``).
        source: where it came from (a path, "generated" ...).
    """

    name: str
    freq: str
    prediction_length: int
    train: list[TimeSeries]
    test: list[TimeSeries] = field(default_factory=list)
    source: str = ""

    def __repr__(self) -> str:
        return (f"TimeSeriesDataset({self.name!r}, freq={self.freq!r}, P={self.prediction_length}, "
                f"{len(self.train)} train / {len(self.test)} test series)")


# -- JSON lines (GluonTS) -----------------------------------------------------------------------
def _parse_target(values: Iterable[Any], where: str) -> np.ndarray:
    try:
        arr = np.array([np.nan if v is None or v == "NaN" or v == "nan" else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: 'target' must be a list of numbers ({e})") from None
    if arr.ndim != 1:
        raise DataError(f"{where}: 'target' must be one-dimensional (multivariate series are not supported)")
    if np.isinf(arr).any():
        raise DataError(f"{where}: 'target' holds infinite values")
    return arr.astype(np.float32)


def read_jsonl(source: str | Path | IO[bytes] | IO[str], freq: str, *, name: str | None = None) -> list[TimeSeries]:
    """Series from a GluonTS JSON-lines file (``{"start": ..., "target": [...]}`` per line).

    Args:
        source: path (``.json``, ``.jsonl``, optionally ``.gz``) or an open file.
        freq: frequency of every series (GluonTS keeps it in the metadata, not in the lines).
        name: file name for error messages (defaults to the path).
    """
    import pandas as pd

    freq = normalize_freq(freq)
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        fh: Any = gzip.open(path, "rt") if path.suffix == ".gz" else open(path, encoding="utf-8")
    else:
        name = name or getattr(source, "name", "<stream>")
        fh = io.TextIOWrapper(source, encoding="utf-8") if isinstance(source.read(0), bytes) else source
    out: list[TimeSeries] = []
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{name}, line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or "target" not in rec or "start" not in rec:
                raise DataError(f"{where}: each line needs 'start' and 'target'")
            try:
                start = pd.Timestamp(rec["start"])
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: bad 'start' {rec['start']!r} ({e})") from None
            item = rec.get("item_id", rec.get("feat_static_cat", [len(out)]))
            item = str(item[0] if isinstance(item, list) and item else item)
            out.append(TimeSeries(_parse_target(rec["target"], where), start, freq, item))
    if not out:
        raise DataError(f"{name}: no series found")
    return out


def read_gluonts(path: str | Path, *, freq: str | None = None, prediction_length: int | None = None,
                 name: str | None = None) -> TimeSeriesDataset:
    """A GluonTS dataset folder or ``.tar.gz`` archive with metadata, train and test JSON lines.

    The metadata gives ``freq`` (or ``time_granularity``) and ``prediction_length``; arguments
    override it. Test entries of the same series share the train entry's ``item_id``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files: dict[str, bytes] = {}
    if path.is_dir():
        for p in path.rglob("*.json*"):
            files[str(p.relative_to(path))] = p.read_bytes()
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar.getmembers():
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and not base.startswith("._") and ".json" in base:
                        f = tar.extractfile(m)
                        if f is not None:
                            files[m.name] = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable tar archive ({e})") from None

    def pick(part: str) -> list[str]:
        return sorted(k for k in files if f"{part}/" in k.replace("\\", "/"))

    meta: dict[str, Any] = {}
    for k in pick("metadata"):
        try:
            meta.update(json.loads(files[k]))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{k}: bad metadata JSON ({e.msg})") from None
    f = freq or meta.get("freq") or meta.get("time_granularity")
    if f is None:
        raise DataError(f"{path}: no frequency in the metadata; pass freq=")
    p = prediction_length or meta.get("prediction_length")
    if p is None:
        raise DataError(f"{path}: no prediction_length in the metadata; pass prediction_length=")

    def load(part: str) -> list[TimeSeries]:
        out: list[TimeSeries] = []
        for k in pick(part):
            out += read_jsonl(io.BytesIO(files[k]), f, name=f"{path}:{k}")
        return out

    train, test = load("train"), load("test")
    if not train:
        raise DataError(f"{path}: no train/*.json inside")
    return TimeSeriesDataset(name or path.name.split(".")[0], normalize_freq(f), int(p), train, test, str(path))


# -- M4 --------------------------------------------------------------------------------------
def _read_m4_rows(path: Path) -> dict[str, np.ndarray]:
    import csv

    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows: dict[str, np.ndarray] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or not header or header[0].strip('"') != "V1":
            raise DataError(f"{path}: not an M4 CSV (expected a header starting with \"V1\")")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                vals = np.array([float(v) for v in row[1:] if v.strip() != ""], dtype=np.float32)
            except ValueError as e:
                raise DataError(f"{path}, line {n} ({row[0]}): {e}") from None
            rows[row[0]] = vals
    return rows


def read_m4(train_csv: str | Path, test_csv: str | Path, *, freq: str = "H", prediction_length: int = 48,
            name: str = "m4_hourly") -> TimeSeriesDataset:
    """The M4 CSVs as GluonTS's ``m4_hourly`` (``_m4.py``): train = each train row; test = the
    train row followed by its test row (one test window per series). M4 has no timestamps;
    GluonTS uses the dummy start 1750-01-01 00:00, and so do we."""
    import pandas as pd

    tr, te = _read_m4_rows(Path(train_csv)), _read_m4_rows(Path(test_csv))
    missing = sorted(set(tr) ^ set(te))
    if missing:
        raise DataError(f"{train_csv} and {test_csv} do not hold the same series (e.g. {missing[:3]})")
    f, start = normalize_freq(freq), pd.Timestamp("1750-01-01 00:00:00")
    train, test = [], []
    for k, v in tr.items():
        if len(te[k]) != prediction_length:
            raise DataError(f"{test_csv}: series {k} has {len(te[k])} test values, expected {prediction_length}")
        train.append(TimeSeries(v, start, f, k))
        test.append(TimeSeries(np.concatenate([v, te[k]]), start, f, k))
    return TimeSeriesDataset(name, f, prediction_length, train, test, f"{train_csv} + {test_csv}")


# -- wide CSV (one column per series) ---------------------------------------------------------
def rolling_test(series: list[TimeSeries], prediction_length: int, windows: int, *,
                 end: int | None = None) -> tuple[list[TimeSeries], list[TimeSeries]]:
    """GluonTS's rolling split of full series (``_lstnet.py``): train = the first
    ``end - P * windows`` points; test entry w (w = 1..windows) = the first
    ``end - P * (windows - w)`` points."""
    train, test = [], []
    for s in series:
        n = len(s) if end is None else min(end, len(s))
        cut = n - prediction_length * windows
        if cut <= 0:
            raise DataError(f"series {s.item_id!r} has {n} points, too few for {windows} test windows of {prediction_length}")
        train.append(TimeSeries(s.target[:cut], s.start, s.freq, s.item_id))
    for w in range(1, windows + 1):
        for s in series:
            n = len(s) if end is None else min(end, len(s))
            test.append(TimeSeries(s.target[: n - prediction_length * (windows - w)], s.start, s.freq, s.item_id))
    return train, test


def read_wide_csv(path: str | Path, *, freq: str, prediction_length: int, windows: int,
                  columns: list[str] | None = None, date_column: str | None = None, header: bool = True,
                  start: str = "1990-01-01", end: int | None = None, name: str | None = None) -> TimeSeriesDataset:
    """One series per column (ETTh1's ``date,HUFL,...,OT``; LSTNet's header-less matrices).

    Args:
        path: ``.csv`` or ``.txt``, optionally gzip-compressed.
        freq: frequency alias; with ``date_column`` the timestamps are checked against it.
        prediction_length, windows: the rolling test split (:func:`rolling_test`).
        columns: which columns to keep (default: all but the date column).
        date_column: the timestamp column, or None (timestamps start at ``start``).
        header: whether the first row names the columns (if not, columns are ``"0"``, ``"1"`` ...).
        end: use only the first ``end`` rows (e.g. the end of ETTh1's standard test period).
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, header=0 if header else None, compression="infer")
    except Exception as e:  # pandas raises many parser errors
        raise DataError(f"{path}: cannot parse as CSV ({e})") from None
    df.columns = [str(c) for c in df.columns]
    f = normalize_freq(freq)
    if date_column is not None:
        if date_column not in df.columns:
            raise DataError(f"{path}: no column {date_column!r} (columns: {list(df.columns)})")
        df = df.set_index(pd.to_datetime(df.pop(date_column), errors="raise"))
        _check_regular(df.index, f, str(path))
        t0 = df.index[0]
    else:
        t0 = pd.Timestamp(start)
    cols = columns or list(df.columns)
    bad = [c for c in cols if c not in df.columns]
    if bad:
        raise DataError(f"{path}: no column(s) {bad} (columns: {list(df.columns)})")
    series = []
    for c in cols:
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float32)
        series.append(TimeSeries(vals, t0, f, c))
    train, test = rolling_test(series, prediction_length, windows, end=end)
    return TimeSeriesDataset(name or path.name.split(".")[0], f, prediction_length, train, test, str(path))


# -- pandas ------------------------------------------------------------------------------------
def _check_regular(index: Any, freq: str | None, what: str) -> str:
    import pandas as pd

    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"{what}: needs a DatetimeIndex, got {type(index).__name__}")
    if index.has_duplicates:
        raise DataError(f"{what}: duplicated timestamps, e.g. {index[index.duplicated()][0]}")
    if not index.is_monotonic_increasing:
        raise DataError(f"{what}: timestamps are not sorted")
    if freq is None:
        freq = index.freqstr or (pd.infer_freq(index) if len(index) >= 3 else None)
        if freq is None:
            raise DataError(f"{what}: irregular timestamps (no frequency can be inferred); resample to a "
                            "regular grid first, e.g. s.resample('h').mean() -- gaps become NaN, which are "
                            "treated as missing values")
    expected = pd.date_range(index[0], periods=len(index), freq=freq)
    if not expected.equals(index):
        k = int(np.argmax(expected != index))
        raise DataError(f"{what}: irregular timestamps for frequency {freq!r}: expected {expected[k]}, found "
                        f"{index[k]}; resample first (gaps become NaN = missing)")
    return normalize_freq(freq)


def from_pandas(data: Any, *, prediction_length: int, freq: str | None = None, windows: int = 1,
                name: str = "pandas") -> TimeSeriesDataset:
    """A dataset from a pandas Series or DataFrame (one series per column) with a regular
    DatetimeIndex. The last ``prediction_length * windows`` points form the rolling test split.
    NaNs are missing values."""
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame(name=str(data.name) if data.name is not None else "series")
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"from_pandas needs a pandas Series or DataFrame, got {type(data).__name__}")
    f = _check_regular(data.index, freq, name)
    series = []
    for c in data.columns:
        vals = pd.to_numeric(data[c], errors="coerce")
        if vals.isna().all():
            raise DataError(f"{name}: column {c!r} has no numeric values")
        series.append(TimeSeries(vals.to_numpy(dtype=np.float32), data.index[0], f, str(c)))
    train, test = rolling_test(series, prediction_length, windows)
    return TimeSeriesDataset(name, f, prediction_length, train, test, "pandas")

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
* :func:`read_csv` -- a user's CSV: one column per series, an optional date column (found by
  name or by form), the rolling test split of :func:`from_pandas`.
* :func:`from_pandas` -- a pandas Series or DataFrame with a regular DatetimeIndex.

Missing values (NaN, or empty cells) are kept as NaN in ``target``; the data module turns them
into an observed-value mask, so they are neither trained on nor guided towards. Irregular
timestamps are an error (resample first). Files are parsed, never unpickled.

Bad input raises :class:`workbench.errors.DataError` (``io.DataError`` is the same class) naming
the file (and line / column / series) and the problem: non-numeric values, infinite values or
values beyond float32's range (with the count and the first rows), a bad ``start``, an empty file
or series, a series too short for its test split. Bad arguments (``prediction_length=0``) raise
:class:`workbench.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from workbench.errors import DataError, check_finite, check_int, first_rows

__all__ = ["TimeSeries", "TimeSeriesDataset", "DataError", "read_jsonl", "read_gluonts", "read_m4",
           "read_wide_csv", "read_csv", "from_pandas", "rolling_test", "normalize_freq"]

_MISSING = {"", "nan", "na", "n/a", "null", "none"}


def _refuse_values(num: np.ndarray, *, file: Any, where: str | None = None, names: Any = None,
                   label: str = "rows", raw: Any = None, nonnumeric: np.ndarray | None = None) -> np.ndarray:
    """``num`` (float64, NaN = missing) as float32, or a :class:`DataError` with the count and the
    first offending ``names`` (positions by default) for non-numeric cells (``nonnumeric``),
    infinite values and values beyond float32's range."""
    names = np.arange(len(num)) if names is None else list(names)
    if nonnumeric is not None and nonnumeric.any():
        idx = np.flatnonzero(nonnumeric)
        eg = ", ".join(repr(raw[i]) for i in idx[:3]) if raw is not None else ""
        raise DataError(f"{len(idx)} non-numeric value(s){' (' + eg + ')' if eg else ''} at {label} "
                        f"{first_rows([names[i] for i in idx])}; use numbers, or leave the cell empty / NaN "
                        "for a missing value", file=file, where=where)
    check_finite(num, file=file, where=where, rows=names, label=label, allow_nan=True)
    return num.astype(np.float32)


def _column_values(col: Any, *, file: Any, where: str | None, names: Any, label: str = "rows") -> np.ndarray:
    """A pandas column as float32 with NaN for missing cells; refuses text, inf and float32 overflow."""
    import pandas as pd

    num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    nonnumeric = np.isnan(num) & col.notna().to_numpy()
    if nonnumeric.any():  # "nan" / "NA" strings that pandas left as text are missing values
        txt = col.astype(str).str.strip().str.lower().to_numpy()
        nonnumeric &= ~np.isin(txt, list(_MISSING))
    return _refuse_values(num, file=file, where=where, names=names, label=label, raw=col.to_numpy(),
                          nonnumeric=nonnumeric)


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
def _parse_target(values: Any, file: Any, where: str | None) -> np.ndarray:
    if not isinstance(values, list):
        raise DataError(f"'target' must be a list of numbers, got {type(values).__name__}", file=file, where=where)
    if not values:
        raise DataError("'target' is empty (a series needs at least one value)", file=file, where=where)
    if any(isinstance(v, list) for v in values):
        raise DataError("'target' must be one-dimensional (multivariate series are not supported)",
                        file=file, where=where)
    num = np.full(len(values), np.nan)
    nonnumeric = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, str):
            t = v.strip()
            if t.lower() in _MISSING:
                continue
            try:
                num[i] = float(t)
            except ValueError:
                nonnumeric[i] = True
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            num[i] = float(v) if not (isinstance(v, int) and abs(v) > 1e308) else math.inf
        else:
            nonnumeric[i] = True
    return _refuse_values(num, file=file, where=where, label="positions", raw=values, nonnumeric=nonnumeric)


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
            raise DataError("no such file", file=path)
        if path.is_dir():
            raise DataError("is a folder, not a JSON-lines file", file=path)
        fh: Any = gzip.open(path, "rt") if path.suffix == ".gz" else open(path, encoding="utf-8")
    else:
        name = name or getattr(source, "name", "<stream>")
        fh = io.TextIOWrapper(source, encoding="utf-8") if isinstance(source.read(0), bytes) else source
    out: list[TimeSeries] = []
    try:
        with fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"line {n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"not valid JSON ({e.msg})", file=f"{name}, {where}") from None
                if not isinstance(rec, dict) or "target" not in rec or "start" not in rec:
                    raise DataError("each line needs 'start' and 'target'", file=f"{name}, {where}")
                start = _parse_start(rec["start"], f"{name}, {where}", None)
                item = rec.get("item_id", rec.get("feat_static_cat", [len(out)]))
                item = str(item[0] if isinstance(item, list) and item else item)
                out.append(TimeSeries(_parse_target(rec["target"], f"{name}, {where}", None), start, freq, item))
    except (UnicodeDecodeError, OSError, EOFError) as e:  # binary junk, a truncated .gz
        raise DataError(f"not a readable JSON-lines text file ({type(e).__name__}: {e})", file=name) from None
    if not out:
        raise DataError("no series found (the file is empty)", file=name)
    return out


def _parse_start(value: Any, file: Any, where: str | None) -> Any:
    import pandas as pd

    if not isinstance(value, str) or not value.strip():
        raise DataError(f"bad 'start' {value!r}: expected a timestamp string such as \"2020-01-01 00:00:00\"",
                        file=file, where=where)
    try:
        start = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"bad 'start' {value!r}: not a timestamp ({str(e).splitlines()[0]})", file=file,
                        where=where) from None
    if start is pd.NaT:
        raise DataError(f"bad 'start' {value!r}: not a timestamp", file=file, where=where)
    return start


def read_gluonts(path: str | Path, *, freq: str | None = None, prediction_length: int | None = None,
                 name: str | None = None) -> TimeSeriesDataset:
    """A GluonTS dataset folder or ``.tar.gz`` archive with metadata, train and test JSON lines.

    The metadata gives ``freq`` (or ``time_granularity``) and ``prediction_length``; arguments
    override it. Test entries of the same series share the train entry's ``item_id``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", file=path)
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
            raise DataError(f"not a GluonTS dataset: expected a folder or a .tar.gz archive with metadata/, "
                            f"train/ and test/ (not a readable tar archive: {e})", file=path) from None

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
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise DataError(f"prediction_length must be a positive integer, got {p!r}", file=path, where="metadata")

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
        raise DataError("no such file", file=path)
    rows: dict[str, np.ndarray] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or not header or header[0].strip('"') != "V1":
            raise DataError(f"{path}: not an M4 CSV (expected a header starting with \"V1\")")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            cells = [v for v in row[1:] if v.strip() != ""]
            num = np.full(len(cells), np.nan)
            nonnumeric = np.zeros(len(cells), dtype=bool)
            for i, v in enumerate(cells):
                try:
                    num[i] = float(v)
                except ValueError:
                    nonnumeric[i] = True
            rows[row[0]] = _refuse_values(num, file=path, where=f"line {n} ({row[0]})", label="columns",
                                          names=[f"V{i + 2}" for i in range(len(cells))], raw=cells,
                                          nonnumeric=nonnumeric)
    if not rows:
        raise DataError("no series (only a header)", file=path)
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
                 end: int | None = None, name: Any = None) -> tuple[list[TimeSeries], list[TimeSeries]]:
    """GluonTS's rolling split of full series (``_lstnet.py``): train = the first
    ``end - P * windows`` points; test entry w (w = 1..windows) = the first
    ``end - P * (windows - w)`` points. ``name``: the file, for error messages."""
    prediction_length = check_int(prediction_length, "prediction_length", minimum=1)
    windows = check_int(windows, "test_windows", minimum=1)
    if not series:
        raise DataError("no series", file=name)
    train, test = [], []
    for s in series:
        n = len(s) if end is None else min(end, len(s))
        cut = n - prediction_length * windows
        if cut <= 0:
            raise DataError(f"{n} points, too few for {windows} test window(s) of prediction_length "
                            f"{prediction_length} (needs more than {prediction_length * windows})", file=name,
                            where=f"series {s.item_id!r}")
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
    df = _read_frame(path, header=header)
    df.columns = [str(c) for c in df.columns]
    f = normalize_freq(freq)
    if date_column is not None:
        if date_column not in df.columns:
            raise DataError(f"{path}: no column {date_column!r} (columns: {list(df.columns)})")
        df = df.set_index(_to_datetime(df.pop(date_column), path, date_column))
        _check_regular(df.index, f, str(path))
        t0 = df.index[0]
    else:
        t0 = pd.Timestamp(start)
    cols = columns or list(df.columns)
    bad = [c for c in cols if c not in df.columns]
    if bad:
        raise DataError(f"{path}: no column(s) {bad} (columns: {list(df.columns)})")
    lines = np.arange(len(df)) + (2 if header else 1)
    series = []
    for c in cols:
        vals = _column_values(df[c], file=path, where=f"column {c!r}", names=lines, label="lines")
        series.append(TimeSeries(vals, t0, f, c))
    train, test = rolling_test(series, prediction_length, windows, end=end, name=path)
    return TimeSeriesDataset(name or path.name.split(".")[0], f, prediction_length, train, test, str(path))


def _read_frame(path: Path, *, header: bool = True) -> Any:
    import pandas as pd

    if not path.exists():
        raise DataError("no such file", file=path)
    if path.is_dir():
        raise DataError("is a folder, not a CSV file", file=path)
    try:
        df = pd.read_csv(path, header=0 if header else None, compression="infer")
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty", file=path) from None
    except Exception as e:  # noqa: BLE001 - pandas raises many parser / decoding errors
        raise DataError(f"cannot parse as CSV ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                        file=path) from None
    if len(df) == 0:
        raise DataError("no data rows (only a header)", file=path)
    return df


def _to_datetime(col: Any, file: Any, column: str) -> Any:
    import pandas as pd

    try:
        idx = pd.DatetimeIndex(pd.to_datetime(col, errors="coerce"))
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"date column {column!r} is not made of timestamps ({e})", file=file) from None
    if idx.isna().any():
        bad = np.flatnonzero(idx.isna())
        raise DataError(f"{len(bad)} value(s) of the date column {column!r} are not timestamps at lines "
                        f"{first_rows((bad + 2).tolist())} (e.g. {col.iloc[bad[0]]!r})", file=file)
    return idx


_DATE_NAMES = {"date", "datetime", "timestamp", "time", "ds", "period"}


def _all_timestamps(col: Any) -> bool:
    """Whether every cell of a text column parses as a timestamp (quietly: this only sniffs)."""
    import pandas as pd

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(pd.to_datetime(col, errors="coerce").notna().all())
        except (ValueError, TypeError, OverflowError):
            return False


def read_csv(path: str | Path, *, prediction_length: int, windows: int = 1, freq: str | None = None,
             date_column: str | None = None, columns: list[str] | None = None, start: str = "2000-01-01",
             name: str | None = None) -> TimeSeriesDataset:
    """A user's CSV, one series per column, with the rolling test split of :func:`from_pandas`.

    The date column is ``date_column``, else the first column when it is named like one (``date``,
    ``timestamp``, ``time`` ...) or is text that parses as timestamps; its timestamps must be
    regular (the frequency is inferred unless ``freq`` is given). Without a date column ``freq``
    is required and the series start at ``start``."""
    import pandas as pd

    path = Path(path)
    df = _read_frame(path)
    df.columns = [str(c) for c in df.columns]
    if date_column is None:
        first = df.columns[0]
        if first.strip().lower() in _DATE_NAMES:
            date_column = first
        elif df[first].dtype == object and _all_timestamps(df[first]):
            date_column = first
    elif date_column not in df.columns:
        raise DataError(f"no column {date_column!r} (columns: {list(df.columns)})", file=path)
    if date_column is not None:
        df = df.set_index(_to_datetime(df.pop(date_column), path, date_column))
    elif freq is None:
        raise DataError("no date column (a first column named date / timestamp / time, or set date_column); "
                        "without one the frequency must be given: set freq (datamodule.freq)", file=path)
    else:
        df.index = pd.date_range(start, periods=len(df), freq=normalize_freq(freq))
    if columns:
        bad = [c for c in columns if c not in df.columns]
        if bad:
            raise DataError(f"no column(s) {bad} (columns: {list(df.columns)})", file=path)
        df = df[columns]
    if df.shape[1] == 0:
        raise DataError("no value columns besides the date column", file=path)
    return from_pandas(df, prediction_length=prediction_length, freq=freq, windows=windows,
                       name=name or path.name.split(".")[0], file=path, row_names=np.arange(len(df)) + 2,
                       row_label="lines")


# -- pandas ------------------------------------------------------------------------------------
def _check_regular(index: Any, freq: str | None, what: str) -> str:
    import pandas as pd

    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"{what}: needs a DatetimeIndex, got {type(index).__name__}")
    if index.has_duplicates:
        raise DataError(f"{what}: duplicated timestamps, e.g. {index[index.duplicated()][0]}")
    if not index.is_monotonic_increasing:
        raise DataError(f"{what}: timestamps are not sorted")
    if freq is None and len(index) < 3:
        raise DataError(f"{what}: only {len(index)} timestamps, too few to infer the frequency; pass freq=")
    if freq is None:
        freq = index.freqstr or pd.infer_freq(index)
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
                name: str = "pandas", file: Any = None, row_names: Any = None,
                row_label: str = "rows") -> TimeSeriesDataset:
    """A dataset from a pandas Series or DataFrame (one series per column) with a regular
    DatetimeIndex. The last ``prediction_length * windows`` points form the rolling test split.
    NaNs are missing values; text, infinite values and values beyond float32's range are refused
    (``file``, ``row_names`` and ``row_label`` name them in the message; default: the timestamps)."""
    import pandas as pd

    prediction_length = check_int(prediction_length, "prediction_length", minimum=1)
    windows = check_int(windows, "test_windows", minimum=1)
    file = file if file is not None else name
    if isinstance(data, pd.Series):
        data = data.to_frame(name=str(data.name) if data.name is not None else "series")
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"from_pandas needs a pandas Series or DataFrame, got {type(data).__name__}")
    if data.shape[1] == 0 or len(data) == 0:
        raise DataError(f"no data ({len(data)} rows, {data.shape[1]} columns)", file=file)
    need = prediction_length * windows
    if len(data) <= need:  # before the frequency check: 2 points cannot show a frequency either
        raise DataError(f"{len(data)} time steps, too few for {windows} test window(s) of prediction_length "
                        f"{prediction_length} (needs more than {need})", file=file)
    f = _check_regular(data.index, freq, str(file))
    names = [str(t) for t in data.index] if row_names is None else list(row_names)
    label = "timestamps" if row_names is None else row_label
    series = []
    for c in data.columns:
        vals = _column_values(data[c], file=file, where=f"column {c!r}", names=names, label=label)
        if np.isnan(vals).all():
            raise DataError("no numeric values (all cells are empty / NaN)", file=file, where=f"column {c!r}")
        series.append(TimeSeries(vals, data.index[0], f, str(c)))
    train, test = rolling_test(series, prediction_length, windows, name=file)
    return TimeSeriesDataset(name, f, prediction_length, train, test, str(file) if file != name else "pandas")

"""User-facing input problems: one exception family, one warning class, and the validation helpers
every domain uses at its boundary (readers, validators, config values).

* :class:`InputError` is the base: a mistake in what the user gave us (a file, a value, a config
  key), never a bug. Its message is one sentence that names the file (with line / row / series)
  or the key, and the problem. The CLI prints it as one line and exits with code 2, whether it is
  raised while the config is composed or inside Lightning's ``fit``; any other exception is a bug
  and keeps its traceback.
* :class:`DataError` (a file or its contents), :class:`ConfigError` (a config key or value),
  :class:`UnsafeOrCorruptFile` (a file ``torch.load(weights_only=True)`` refuses).
* :class:`RunFailed` is not an input error: a run that cannot produce what it was asked for (a
  non-finite loss, zero training batches, non-finite samples). The CLI prints it as one line and
  exits with code 1.
* :class:`InputWarning`: the input is usable but not as given (a few invalid SMILES dropped, self
  loops removed); the message says how many, where, and where the full list is written.

Helpers: :func:`check_int`, :func:`check_number`, :func:`check_finite`, :func:`first_rows`.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["InputError", "DataError", "ConfigError", "UnsafeOrCorruptFile", "RunFailed", "InputWarning",
           "warn_input", "check_int", "check_number", "check_finite", "first_rows"]


class InputError(ValueError):
    """A mistake in the user's input (file, value, config key); the message is one sentence."""


class DataError(InputError):
    """A problem with a data file or its contents.

    Args:
        problem: what is wrong, in words a user can act on.
        file: the file (or dataset name) it was found in.
        where: line / row / series / key inside the file.
    """

    def __init__(self, problem: str, *, file: Any = None, where: str | None = None) -> None:
        self.problem, self.file, self.where = problem, None if file is None else str(file), where
        prefix = ": ".join(p for p in (self.file, where) if p)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class ConfigError(InputError):
    """A bad config key or value; the message names the key."""


class UnsafeOrCorruptFile(DataError, RuntimeError):
    """A file that ``torch.load(weights_only=True)`` refuses: it references code, or it is not a torch file."""

    def __init__(self, message: str) -> None:  # kept message-only for callers that built one
        InputError.__init__(self, message)
        self.problem, self.file, self.where = message, None, None


class RunFailed(RuntimeError):
    """A run could not produce what it was asked for (non-finite loss or samples, nothing to train on)."""


class InputWarning(UserWarning):
    """Usable input that was changed on the way in (rows dropped, self loops removed, ...)."""


def warn_input(message: str, stacklevel: int = 2) -> None:
    """Warn about usable but altered input (shown every time, also when a cache is reused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.warn(message, InputWarning, stacklevel=stacklevel + 1)


def first_rows(idx: Iterable[Any], n: int = 5) -> str:
    """``"3, 17, 42 and 9 more"`` for error messages."""
    idx = list(idx)
    head = ", ".join(str(i) for i in idx[:n])
    return head + (f" and {len(idx) - n} more" if len(idx) > n else "")


def check_int(value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an int (bools and non-integral floats refused), within [minimum, maximum]."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    if not ok:
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"config key '{key}' must be <= {maximum}, got {value}")
    return value


def check_number(value: Any, key: str, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite float within the bounds (``exclusive_minimum`` for > instead of >=)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be finite, got {value}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ConfigError(f"config key '{key}' must be {'>' if exclusive_minimum else '>='} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"config key '{key}' must be <= {maximum:g}, got {value:g}")
    return value


_F32_MAX = float(np.finfo(np.float32).max)


def check_finite(values: Any, *, file: Any = None, where: str | None = None, rows: Sequence[Any] | None = None,
                 label: str = "rows", allow_nan: bool = False, float32: bool = True) -> np.ndarray:
    """Refuse infinite values (NaN too unless ``allow_nan``, where NaN means "missing"; with
    ``float32``, also values beyond float32's range) with the count and the first offending rows.
    ``values``: an array whose first axis is the row; ``rows`` names the rows (default: their
    index) and ``label`` what they are ("rows", "lines"). Returns the values as float64."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(a) if allow_nan else ~np.isfinite(a)
        if float32:
            bad |= np.abs(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)) > _F32_MAX
    if bad.any():
        per_row = bad.reshape(len(a), -1).any(1) if a.ndim > 1 else bad
        idx = np.flatnonzero(per_row)
        names = [rows[i] for i in idx] if rows is not None else idx.tolist()
        kind = ("" if allow_nan else "NaN, ") + ("infinite or beyond float32's range (±3.4e38)" if float32 else "infinite")
        raise DataError(f"{int(bad.sum())} value(s) are {kind} at {label} {first_rows(names)}", file=file, where=where)
    return a

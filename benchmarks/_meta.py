"""Shared helpers of the benchmark scripts: what every measured row records, when stored rows may
be reused, and the README blocks the tables are rendered into.

Every newly measured row or entry carries ``meta = measurement(settings)``: when it was measured
(UTC, ISO 8601), with which settings (epochs, steps, run dir, seed, ...) and on what machine (CPU
model, cores, torch threads, torch / Python versions). Stored rows are reused only with an explicit
``--reuse`` and only when their recorded settings equal the current run's (:func:`reusable`); rows
stored before metadata was kept are never reused.
"""
from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NO_META = "recorded before metadata was kept"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def measurement(settings: dict) -> dict:
    """The metadata a newly measured row records: time (UTC), settings, machine."""
    return {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
            "machine": machine()}


def settings_match(row: dict, settings: dict) -> bool:
    """True when ``row`` records metadata whose settings equal ``settings``."""
    meta = row.get("meta") if isinstance(row, dict) else None
    if not meta:
        return False
    want = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}
    return meta.get("settings") == want


def reused(stored: dict, label: str, settings: dict, reuse: bool) -> dict | None:
    """The stored row ``label`` if the run may keep it instead of measuring: never unless ``reuse``,
    and then only if it was recorded with the same ``settings``."""
    row = stored.get(label)
    return row if reuse and row is not None and settings_match(row, settings) else None


def meta_line(entry: dict) -> str:
    """One line for a rendered table: when and where its rows were measured."""
    meta = entry.get("meta") if isinstance(entry, dict) else None
    if not meta:
        return f"*Measured: {NO_META}.*"
    m = meta.get("machine", {})
    return (f"*Measured {meta.get('measured_at', '?')} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores, "
            f"{m.get('torch_threads', '?')} torch threads, torch {m.get('torch', '?')}).*")


# -- README blocks ------------------------------------------------------------------------------------
def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def read_block(path: Path, name: str) -> str:
    """The generated text of the block ``name`` in ``path`` (up to an optional ``<!-- notes -->``)."""
    start, end = _markers(name)
    text = Path(path).read_text()
    if start not in text or end not in text:
        raise KeyError(f"{path} has no {start} ... {end} block")
    body = text.split(start, 1)[1].split(end, 1)[0]
    return body.split("<!-- notes -->")[0].strip("\n")


def write_block(path: Path, name: str, rendered: str) -> None:
    """Replace the generated text of block ``name`` in ``path``, keeping hand-written notes after
    ``<!-- notes -->`` inside the block."""
    start, end = _markers(name)
    text = Path(path).read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block")
    body = text.split(start, 1)[1].split(end, 1)[0]
    notes = "<!-- notes -->" + body.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in body else ""
    Path(path).write_text(text.replace(start + body + end, f"{start}\n{rendered}\n{notes}{end}", 1))


def publish(result: dict, table: Any, path: Path, name: str, readme: bool) -> dict:
    """The common tail of a benchmark's ``main``: print ``table(result)`` and, with ``--readme``, write it
    into block ``name`` of ``path``; returns ``result``."""
    rendered = table(result)
    print(rendered)
    if readme:
        write_block(path, name, rendered)
    return result


def blocks(path: Path) -> list[str]:
    """Names of every generated block in ``path``."""
    return re.findall(r"<!-- (?!/|notes)([\w-]+-table) -->", Path(path).read_text())

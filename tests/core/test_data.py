"""Data plumbing: data root, atomic writes, checksummed downloads (tested on file:// URLs)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from workbench.data import EpochSeededSampler, atomic_write, data_root, download, find_data


def test_data_root_and_find(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data_root() == tmp_path
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "a.csv").write_text("x")
    assert find_data("graphs/a.csv").read_text() == "x"
    with pytest.raises(FileNotFoundError, match="WORKBENCH_DATA"):
        find_data("graphs/missing.csv")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert list(tmp_path.iterdir()) == [p]


def test_download_with_checksum(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = download(src.as_uri(), tmp_path / "dl" / "f.bin", digest, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="checksum mismatch"):
        download(src.as_uri(), tmp_path / "dl" / "g.bin", "0" * 64, progress=False)
    assert not (tmp_path / "dl" / "g.bin").exists()
    with pytest.raises(ConnectionError, match="could not download"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "dl" / "h.bin", progress=False)


def test_epoch_seeded_sampler_is_reproducible() -> None:
    s = EpochSeededSampler(10, seed=3)
    s.set_epoch(2)
    a = list(s)
    s.set_epoch(3)
    b = list(s)
    s.set_epoch(2)
    assert list(s) == a and a != b and sorted(a) == list(range(10))

"""core/files.py: the cached sha256 of large files."""

from __future__ import annotations

import os

import pytest

from npueval.core import files
from npueval.core.files import cached_sha256, file_sha256


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUEVAL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting_hash(monkeypatch) -> list:
    hashed = []

    def count(path, *args):
        hashed.append(path)
        return file_sha256(path, *args)

    monkeypatch.setattr(files, "file_sha256", count)
    return hashed


def test_a_file_is_hashed_once_while_it_stays_the_same(cache, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"weights" * 1000)
    hashed = counting_hash(monkeypatch)
    assert cached_sha256(path) == cached_sha256(path) == file_sha256(path)
    assert len(hashed) == 1


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_hashed_again(cache, tmp_path, monkeypatch):
    """A replacement that keeps the size and sets the old mtime back (cp -p, touch -r) still
    changes the ctime, which nobody can set."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"a" * 4096)
    before = cached_sha256(path)
    st = path.stat()
    path.write_bytes(b"b" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    assert cached_sha256(path) == file_sha256(path) != before


def test_a_cache_that_cannot_be_written_costs_only_the_hashing(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("NPUEVAL_CACHE_DIR", str(tmp_path / "a-file"))
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x" * 100)
    assert cached_sha256(path) == file_sha256(path)


def test_a_damaged_cache_entry_is_not_believed(cache, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x" * 100)
    cached_sha256(path)
    (entry,) = (cache / files.DIGESTS).iterdir()
    entry.write_text("0" * 63 + "\n")  # a digest cut short
    assert cached_sha256(path) == file_sha256(path)

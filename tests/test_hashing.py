"""`HashingFile`: the sha256 taken from a reader's own reads is the file's, whatever the reader
does (skips ahead, reads again, seeks back, reads past the end, stops half way)."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from tol_dagster.store import hashing
from tol_dagster.store.hashing import HashingFile, hashed_reads


def random_reads(handle: io.RawIOBase | io.BufferedReader, size: int, rng: random.Random) -> None:
    """Reads a page reader could make, and worse: at random places, of random lengths."""
    for _ in range(rng.randrange(0, 40)):
        kind = rng.random()
        if kind < 0.5:  # onwards from about where the last read ended
            handle.seek(max(0, handle.tell() + rng.randrange(-300, 3000)))
        elif kind < 0.8:
            handle.seek(rng.randrange(0, size + 500))  # anywhere, past the end included
        else:
            handle.seek(rng.randrange(-min(200, size), 1), io.SEEK_END)
        data = handle.read(rng.choice([0, 1, 255, 256, 4096, 70_000, size]))
        assert data is not None


@pytest.mark.parametrize("buffered", [False, True], ids=["raw", "buffered"])
def test_the_sha256_of_any_reads_is_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffered: bool
) -> None:
    monkeypatch.setattr(hashing, "CHUNK_BYTES", 1000)  # gaps are read in several pieces
    rng = random.Random(3)
    for trial in range(200):
        size = rng.choice([0, 1, 999, 1000, 1001, rng.randrange(2, 200_000)])
        path = tmp_path / f"{trial}.bin"
        content = rng.randbytes(size)
        path.write_bytes(content)
        raw = HashingFile(path)
        with (
            io.BufferedReader(raw, buffer_size=rng.choice([1, 64, 8192])) if buffered else raw as h
        ):
            random_reads(h, size, rng)
            assert raw.sha256() == hashlib.sha256(content).hexdigest(), trial


def test_reads_return_the_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 10)
    with io.BufferedReader(HashingFile(path)) as handle:
        handle.seek(1000)
        assert handle.read(10) == (bytes(range(256)) * 10)[1000:1010]
        handle.seek(5)
        assert handle.read(3) == bytes([5, 6, 7]) and handle.tell() == 8
        handle.seek(2, io.SEEK_CUR)
        assert handle.read(1) == bytes([10])
        handle.seek(-2, io.SEEK_END)
        assert handle.read(10) == bytes([254, 255])


def test_hashed_reads_with_a_known_sha256_opens_nothing(tmp_path: Path) -> None:
    with hashed_reads(tmp_path / "absent", "ab" * 32) as (handle, sha256):
        assert handle is None and sha256() == "ab" * 32
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with hashed_reads(path, None) as (handle, sha256):
        assert handle is not None and handle.read(1) == b"a"
        assert sha256() == hashlib.sha256(b"abc").hexdigest()

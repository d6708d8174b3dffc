"""`HashingFile`: the sha256 taken from a reader's own reads is the file's, and so are the crc32s
of the ranges it tracks, whatever the reader does (skips ahead, reads again, seeks back, reads
past the end, stops half way)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zlib
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


def test_hashed_reads_with_a_known_sha256_gives_it_without_hashing(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with hashed_reads(path, "ab" * 32) as (handle, reads):
        assert handle.read(1) == b"a" and reads.sha256() == "ab" * 32
    with hashed_reads(path, None) as (handle, reads):
        assert handle.read(1) == b"a"
        assert reads.sha256() == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("known", [None, "ab" * 32], ids=["hashing", "sha256-known"])
@pytest.mark.parametrize("buffered", [False, True], ids=["raw", "buffered"])
def test_the_crcs_of_tracked_ranges_are_their_bytes_whatever_the_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffered: bool, known: str | None
) -> None:
    monkeypatch.setattr(hashing, "CHUNK_BYTES", 1000)
    rng = random.Random(5)
    for trial in range(200):
        size = rng.choice([1, 999, 1000, 1001, rng.randrange(2, 200_000)])
        content = rng.randbytes(size)
        path = tmp_path / f"{trial}.bin"
        path.write_bytes(content)
        # in file order and apart, as `track` takes them: adjacent, empty, past the end too
        cuts = sorted(rng.randrange(0, size + 100) for _ in range(2 * rng.randrange(0, 6)))
        ranges = [(start, stop - start) for start, stop in zip(cuts[::2], cuts[1::2], strict=True)]
        raw = HashingFile(path, known)
        raw.track(ranges)
        with (
            io.BufferedReader(raw, buffer_size=rng.choice([1, 64, 8192])) if buffered else raw as h
        ):
            random_reads(h, size, rng)
            expected = [
                zlib.crc32(content[start : start + length])
                if start + length <= size or not length
                else None
                for start, length in ranges
            ]
            assert raw.crcs() == expected, trial
            assert raw.sha256() == (known or hashlib.sha256(content).hexdigest()), trial


def test_with_a_known_sha256_only_tracked_bytes_are_read_beyond_the_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(100_000))
    read: list[tuple[int, int]] = []
    pread = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        read.append((offset, length))
        return pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counted)
    with HashingFile(path, "ab" * 32) as raw:
        raw.track([(10_000, 500), (60_000, 20)])
        raw.seek(50_000)
        assert raw.read(5) == bytes(5)
        assert raw.crcs() == [zlib.crc32(bytes(500)), zlib.crc32(bytes(20))]
    assert read == [(10_000, 500), (60_000, 20)]


def test_ranges_are_tracked_from_the_first_read_in_file_order_and_apart(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef")
    with HashingFile(path) as raw:
        for refused in ([(2, 2), (0, 1)], [(0, 3), (2, 2)], [(0, -1)]):
            with pytest.raises(ValueError, match="file order"):
                raw.track(refused)
        raw.track([(0, 2), (2, 0), (2, 2), (5, 9)])  # adjacent, empty and past the end are fine
        assert raw.crcs() == [zlib.crc32(b"ab"), 0, zlib.crc32(b"cd"), None]
    with HashingFile(path) as raw:
        raw.read(2)
        with pytest.raises(ValueError, match="first read"):
            raw.track([(0, 3)])

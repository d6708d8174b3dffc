"""The sha256 of a file: the one place that hashes content (downloads, audit, staging, adopt).

hashlib releases the GIL while it digests a large buffer, and so does the read: files hashed
in threads run in parallel on as many cores as there are threads."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

#: Large reads keep hashing at disk speed without holding a whole ~500 MB file in memory.
CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of the file's bytes, read in 8 MiB chunks into one reused buffer;
    `on_bytes(n)` after each chunk (progress). The buffer is no larger than the file: zeroing
    8 MiB for a file of 0.7 MB cost as much as hashing it."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(max(1, min(CHUNK_BYTES, os.fstat(handle.fileno()).st_size)))
        view = memoryview(buffer)
        while read := handle.readinto(view):
            digest.update(view[:read])
            if on_bytes is not None:
                on_bytes(read)
    return digest.hexdigest()


class HashingFile(io.RawIOBase):
    """A file read at will (seek, read) whose sha256 comes from the reads themselves: a reader
    that reads most of a file anyway (the gate's pass over `emb`) then needs no second read of
    it for the hash. Each byte is hashed once, in file order: bytes a read skips over are read
    and hashed first, bytes read again are not hashed again, and `sha256` reads the rest.

    Wrap it in `io.BufferedReader` for small reads; seeks within that buffer stay there, so a
    page reader's headers and bodies reach this file as one sequential stream."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self.name = str(path)
        self._position = self._hashed = 0
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = os.lseek(self._fd, offset, whence)  # a file's rules, errors included
        return self._position

    def readinto(self, buffer: Any) -> int:
        self._hash_to(self._position)
        read = os.readv(self._fd, [buffer])  # from the file's offset, which it moves on
        start, self._position = self._position, self._position + read
        if self._position > self._hashed:
            self._digest.update(memoryview(buffer).cast("B")[self._hashed - start : read])
            self._hashed = self._position
        return read

    def sha256(self) -> str:
        """Hex sha256 of the whole file (the bytes not read so far are read now)."""
        self._hash_to(None)
        return self._digest.hexdigest()

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def _hash_to(self, end: int | None) -> None:
        """Hash the bytes from the last hashed one to `end` (None: the end of the file)."""
        while end is None or self._hashed < end:
            want = CHUNK_BYTES if end is None else min(CHUNK_BYTES, end - self._hashed)
            block = os.pread(self._fd, want, self._hashed)
            if not block:
                return
            self._digest.update(block)
            self._hashed += len(block)


@contextmanager
def hashed_reads(
    path: Path, known: str | None
) -> Iterator[tuple[BinaryIO | None, Callable[[], str]]]:
    """A handle on the file at `path` for a reader that reads most of it, and a function giving
    the file's sha256 after (`HashingFile`); with the sha256 `known` already, no handle (None:
    the reader opens the file its own way) and that sha256."""
    if known is not None:
        yield None, lambda: known
        return
    with HashingFile(path) as raw, io.BufferedReader(raw) as handle:
        yield handle, raw.sha256


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sha256_files(
    paths: Sequence[Path],
    *,
    threads: int,
    on_bytes: Callable[[int], None] | None = None,
    on_file: Callable[[Path, str], None] | None = None,
) -> dict[Path, str]:
    """Hex sha256 of each of `paths`, hashed by `threads` threads, largest files first (the
    last file to start is then a small one); `on_file(path, sha256)` as each one is done."""

    def one(path: Path) -> str:
        sha256 = sha256_file(path, on_bytes)
        if on_file is not None:
            on_file(path, sha256)
        return sha256

    ordered = sorted(paths, key=lambda p: p.stat().st_size, reverse=True)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="tol-hash") as pool:
        return dict(zip(ordered, pool.map(one, ordered), strict=True))

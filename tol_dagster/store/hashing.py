"""The sha256 of a file: the one place that hashes content (downloads, audit, staging, adopt).

hashlib releases the GIL while it digests a large buffer, and so does the read: files hashed
in threads run in parallel on as many cores as there are threads."""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO

from isal import isal_zlib

#: Large reads keep hashing at disk speed without holding a whole ~500 MB file in memory.
CHUNK_BYTES = 8 * 1024 * 1024

#: zlib's crc32 (the same numbers), from ISA-L: ~29 GB/s against zlib 1.2's ~5.6 here; the gate
#: takes the crc of every `uuid` and `emb` chunk it reads, and spends ~3.5% less CPU for it.
crc32 = isal_zlib.crc32


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


#: Reads of a file that publishes keep replacing while it is hashed (the last one counts).
READ_TRIES = 3


@dataclass
class HashingWriter:
    """A file written through, its bytes hashed on their way out: their sha256 without reading
    the file back (a slice's, the centroid table's)."""

    handle: Any
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.handle.write(view)
        self.size += view.nbytes
        return view.nbytes

    def written(self) -> tuple[os.stat_result, str]:
        """The file's status, once flushed, and the sha256 of what was written to it: of one
        version of it, as `sha256_of_one_version` gives them (a rename keeps the status)."""
        self.handle.flush()
        return os.fstat(self.handle.fileno()), self.digest.hexdigest()


def file_version(stat: os.stat_result) -> tuple[int, int, int, int]:
    """Which file a path held: a publish renames another inode in, an edit in place changes
    its size or mtime (bit rot changes neither)."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def replaced_since(path: Path, version: tuple[int, int, int, int]) -> bool:
    """Whether `path` no longer holds the `file_version` it held (gone, or another file)."""
    try:
        return file_version(path.stat()) != version
    except OSError:
        return True


def sha256_of_one_version(
    path: Path, on_bytes: Callable[[int], None] | None = None
) -> tuple[os.stat_result, str]:
    """The status and sha256 of the file at `path`, both of one version of it: hashed again
    if a publish renamed another file into `path` while it was hashed (READ_TRIES at most)."""
    for _ in range(READ_TRIES):
        before = path.stat()
        sha256 = sha256_file(path, on_bytes)
        after = path.stat()
        if file_version(before) == file_version(after):
            break
    return after, sha256


class HashingFile(io.RawIOBase):
    """A file read at will (seek, read) whose sha256 comes from the reads themselves: a reader
    that reads most of a file anyway (the gate's pass over `emb`) then needs no second read of
    it for the hash. Each byte is hashed once, in file order: bytes a read skips over are read
    and hashed first, bytes read again are not hashed again, and `sha256` reads the rest.

    The same reads give the crc32 of byte ranges named by `track` (the gate keeps those of each
    row group's `uuid` and `emb` column chunks, so that a slice copying them can prove later
    that they are the bytes it verified). With the sha256 `known` already, nothing is hashed
    and, beyond what the reader reads, only the tracked ranges are read. The ranges come in
    file order and apart, so each read touches only the few it overlaps (a footer of many row
    groups must not make the gate quadratic).

    Wrap it in `io.BufferedReader` for small reads; seeks within that buffer stay there, so a
    page reader's headers and bodies reach this file as one sequential stream."""

    def __init__(self, path: Path, known: str | None = None) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self.name = str(path)
        self._position = self._hashed = 0
        self._known = known
        self._digest = hashlib.sha256() if known is None else None
        self._ranges: list[_Crc] = []
        self._pending: deque[_Crc] = deque()  # ranges not read to their end yet, in order

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
        if read and self._position > self._hashed:  # nothing past the end moves it
            self._seen(self._hashed, memoryview(buffer).cast("B")[self._hashed - start : read])
            self._hashed = self._position
        return read

    def track(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Take the crc32 of each (offset, length) range from here on, before any read; the
        ranges in file order, none overlapping the next (`ordered`)."""
        if self._hashed:
            raise ValueError("ranges are tracked from the file's first read")
        if not ordered(ranges):
            raise ValueError("tracked ranges must come in file order, apart")
        self._ranges = [_Crc(offset, offset + length) for offset, length in ranges]
        self._pending = deque(r for r in self._ranges if r.end > r.start)

    def sha256(self) -> str:
        """Hex sha256 of the whole file (the bytes not read so far are read now)."""
        if self._known is not None:
            return self._known
        self._hash_to(None)
        assert self._digest is not None
        return self._digest.hexdigest()

    def crcs(self) -> list[int | None]:
        """The crc32 of each tracked range (the bytes not read so far are read now); None for
        a range past the end of the file."""
        self._hash_to(None)
        return [r.crc if r.seen == r.end - r.start else None for r in self._ranges]

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def _hash_to(self, end: int | None) -> None:
        """Take in the bytes from the last one taken to `end` (None: the end of the file):
        all of them for the sha256, else only those of tracked ranges."""
        while end is None or self._hashed < end:
            start = self._hashed if self._digest is not None else self._next_tracked()
            if start is None or (end is not None and start >= end):
                self._hashed = max(self._hashed, end or 0)
                return
            stop = start + CHUNK_BYTES if end is None else min(start + CHUNK_BYTES, end)
            if self._digest is None:
                stop = min(stop, self._pending[0].end)  # the range `start` lies in
            block = os.pread(self._fd, stop - start, start)
            if not block:
                return
            self._seen(start, memoryview(block))
            self._hashed = start + len(block)

    def _next_tracked(self) -> int | None:
        """The first byte from the last one taken on that lies in a tracked range."""
        return max(self._pending[0].start, self._hashed) if self._pending else None

    def _seen(self, offset: int, block: memoryview) -> None:
        """Bytes [offset, offset + len(block)) of the file, each seen once, in file order."""
        if self._digest is not None:
            self._digest.update(block)
        end = offset + len(block)
        for crc in self._pending:
            if crc.start >= end:
                break
            part = block[max(crc.start, offset) - offset : min(crc.end, end) - offset]
            crc.crc = crc32(part, crc.crc)
            crc.seen += len(part)
        while self._pending and self._pending[0].end <= end:
            self._pending.popleft()


def ordered(ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether (offset, length) ranges come in file order, each ending before the next starts."""
    return all(length >= 0 for _, length in ranges) and all(
        start + length <= following for (start, length), (following, _) in pairwise(ranges)
    )


@dataclass
class _Crc:
    """A tracked range [start, end) and the crc32 of its bytes seen so far."""

    start: int
    end: int
    crc: int = 0
    seen: int = 0


@contextmanager
def hashed_reads(path: Path, known: str | None) -> Iterator[tuple[BinaryIO, HashingFile]]:
    """A handle on the file at `path` for a reader that reads most of it, and the
    `HashingFile` under it, which gives the file's sha256 after (`known` already: that one)."""
    with HashingFile(path, known) as raw, io.BufferedReader(raw) as handle:
        yield handle, raw


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

"""The sha256 of a file: the one place that hashes content (downloads, audit, staging, adopt).

hashlib releases the GIL while it digests a large buffer, and so does the read: files hashed
in threads run in parallel on as many cores as there are threads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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

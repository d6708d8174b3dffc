"""What is read from a file, kept per file version (its inode, size and mtime): mirror files and
the tables kept beside them are replaced by renames, never changed in place, so a new version is
a new key. A rank pass reads the same few files' footers and tables for thousands of slices."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def per_file_version(maxsize: int) -> Callable[[Callable[[Path], T]], Callable[[Path], T]]:
    """Decorate `read(path)` so that each version of a file is read once (the `maxsize` latest
    kept): the result is shared, so callers must treat it as read-only."""

    def decorate(read: Callable[[Path], T]) -> Callable[[Path], T]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(path: str, inode: int, size: int, mtime_ns: int) -> T:
            return read(Path(path))

        @functools.wraps(read)
        def by_version(path: Path) -> T:
            status = os.stat(path)
            return cached(str(path), status.st_ino, status.st_size, status.st_mtime_ns)

        return by_version

    return decorate

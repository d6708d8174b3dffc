"""Crash-safe small writes: after a crash at any instant the old or the new file is there, whole."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

#: Prefix and suffix of the temporary files `write_atomic` leaves behind only if killed mid-write.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


_UMASK_LOCK = threading.Lock()


@cache
def process_umask() -> int:
    """The process umask, read once. `os.umask` can only be read by setting it, which races
    with threads creating files, so Linux's /proc is asked first; the swap is the fallback."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def public_mode(*, read_only: bool = False) -> int:
    """The mode an ordinary `open()` would give a new file (0644 under umask 022): temp files
    from `mkstemp` are 0600, which would hide published files from everyone else."""
    return (0o444 if read_only else 0o666) & ~process_umask()


def make_public(target: int | Path, *, read_only: bool = False) -> None:
    """chmod a file (by fd or path) to `public_mode`, before it is renamed into place."""
    if isinstance(target, int):
        os.fchmod(target, public_mode(read_only=read_only))
    else:
        os.chmod(target, public_mode(read_only=read_only))


def fsync_dir(path: Path) -> None:
    """Make renames and new names inside `path` durable (POSIX needs the directory synced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: Path, *, sync_dir: bool = True, publish: Callable[[Path, Path], None] | None = None
) -> Iterator[Path]:
    """A temp path next to `path` (mode as an ordinary `open()` would give), fsynced and renamed
    onto `path` when the block succeeds, removed otherwise: the one atomic write of the project,
    for writers that need a path (pyarrow, numpy, DuckDB) rather than bytes. `sync_dir` False
    leaves the rename's durability to the caller's one `fsync_dir` after many (a rank pass);
    `publish(temp, path)` takes the finished temp file over to do both later
    (`renames.DeferredRenames`), and the caller syncs the folder."""
    if publish is not None and sync_dir:
        raise ValueError("a deferred publish leaves syncing the folder to the caller")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX
    )
    handed_over = False
    try:
        make_public(fd)  # writers reopen the path: the mode stays, not mkstemp's 0600
        os.close(fd)
        yield Path(temp)
        if publish is not None:
            publish(Path(temp), path)
            handed_over = True
        else:
            fsync_file(Path(temp))
            os.replace(temp, path)
    finally:
        if not handed_over:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    if sync_dir:
        fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable (before a rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    sync_dir: bool = True,
    publish: Callable[[Path, Path], None] | None = None,
) -> None:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync the folder
    (unless not `sync_dir`, or done later by `publish`: see `atomic_path`)."""
    with atomic_path(path, sync_dir=sync_dir, publish=publish) as temp:
        temp.write_bytes(data)


def is_temp_of(candidate: Path, path: Path) -> bool:
    """True if `candidate` is a temporary file an interrupted `write_atomic(path, ...)` left."""
    return (
        candidate.parent == path.parent
        and candidate.name.startswith(f"{TEMP_PREFIX}{path.name}.")
        and candidate.name.endswith(TEMP_SUFFIX)
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` between processes; the kernel drops it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

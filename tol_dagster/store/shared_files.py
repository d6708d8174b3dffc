"""Files the store shares with a user's own folder: brought in by hard link (or copied), and
the inodes that publishing must leave as they are.

`tol-dagster adopt` hard-links a user's verified files into staging instead of copying them. A
hard link is the same inode, so anything the store did to the file's metadata would change the
user's file too: `publish_generation` makes every published file read-only, which on a shared
inode would chmod the user's copy. The store therefore records each inode it shares with the
path it came from, and publishing skips the chmod for an inode still linked at that path. Once
the user's path is gone or holds another inode (`hf download` replaces a file by renaming a new
one onto it), the inode is the store's alone and is made read-only like any other.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tol_dagster.store.durable import atomic_path, file_lock, write_atomic
from tol_dagster.store.layout import Layout

#: How a file was brought into the store.
LINKED = "linked"
COPIED = "copied"
#: errnos of `os.link` that mean "not here, copy instead": another file system, or one that
#: cannot hard-link (some network and FUSE file systems answer EPERM or ENOTSUP).
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK}


def _record_path(layout: Layout, config: str) -> Path:
    return layout.store_dir(config) / "shared_inodes.json"


def bring_in(source: Path, target: Path, *, copy: bool) -> str:
    """Put `source`'s bytes at `target` without touching `source`: a hard link unless `copy`
    or the file systems differ (then a copy, fsynced and renamed into place); LINKED or COPIED."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return LINKED
        except OSError as error:
            if error.errno not in _NO_LINK:
                raise
    with atomic_path(target) as temp:
        shutil.copyfile(source, temp)  # bytes only: the copy's mode and times are its own
    return COPIED


def record_shared(layout: Layout, config: str, sources: Iterable[Path]) -> None:
    """Remember that the store shares the inodes of `sources` (files the user keeps), so that
    publishing never changes their mode. Entries whose path moved on are dropped here too."""
    path = _record_path(layout, config)
    with file_lock(path.with_name(".shared_inodes.lock")):
        entries = {e["path"]: e for e in _entries(path) if _still_linked(e)}
        for source in sources:
            status = source.stat()
            key = str(source.absolute())
            entries[key] = {"path": key, "dev": status.st_dev, "ino": status.st_ino}
        write_atomic(path, json.dumps(sorted(entries.values(), key=lambda e: e["path"])).encode())


def shared_inodes(layout: Layout, config: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the store's files still linked at a user's path: leave their mode."""
    return {
        (e["dev"], e["ino"]) for e in _entries(_record_path(layout, config)) if _still_linked(e)
    }


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def _still_linked(entry: dict[str, Any]) -> bool:
    try:
        status = os.stat(str(entry["path"]))
    except (OSError, KeyError):
        return False
    return (status.st_dev, status.st_ino) == (entry.get("dev"), entry.get("ino"))

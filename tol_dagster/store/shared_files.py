"""Files the store shares with a user's own folder: brought in by hard link (or copied), and
the inodes that publishing must leave as they are.

`tol-dagster adopt` hard-links a user's verified files into staging instead of copying them. A
hard link is the same inode, so anything the store did to the file's metadata would change the
user's file too: `publish_generation` makes every published file read-only, which on a shared
inode would chmod the user's copy. The store therefore records each inode it shares with the
path it came from, and publishing skips the chmod for an inode still linked at that path, or,
once that path is gone, for one with more links than the store holds (the user moved or renamed
their folder: the file is still theirs). Once the inode is linked in the store alone (`hf
download` replaced the user's file by renaming a new one onto it, or the user deleted it), it is
made read-only like any other.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
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
        entries = {e["path"]: e for e in _still_shared(layout, config, _entries(path))}
        for source in sources:
            status = source.stat()
            key = str(source.absolute())
            entries[key] = {"path": key, "dev": status.st_dev, "ino": status.st_ino}
        write_atomic(path, json.dumps(sorted(entries.values(), key=lambda e: e["path"])).encode())


def shared_inodes(layout: Layout, config: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the store's files still shared with a user: leave their mode."""
    entries = _still_shared(layout, config, _entries(_record_path(layout, config)))
    return {(e["dev"], e["ino"]) for e in entries}


def _still_shared(
    layout: Layout, config: str, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The `entries` whose inode a user still holds: at its path, or, the path gone, anywhere
    outside the store (more links than the store's own)."""
    linked = [e for e in entries if _still_linked(e)]
    moved = {(e.get("dev"), e.get("ino")) for e in entries} - {(e["dev"], e["ino"]) for e in linked}
    if not moved:
        return linked
    elsewhere = _linked_outside(layout.store_dir(config), moved)
    return linked + [e for e in entries if (e.get("dev"), e.get("ino")) in elsewhere]


def _linked_outside(store: Path, inodes: set[tuple[Any, Any]]) -> set[tuple[int, int]]:
    """Those of `inodes` with more links than the store holds (one walk of the store)."""
    links: dict[tuple[int, int], list[int]] = {}
    for folder, _, names in os.walk(store):
        for name in names:
            try:
                status = os.lstat(os.path.join(folder, name))
            except OSError:  # removed meanwhile
                continue
            key = (status.st_dev, status.st_ino)
            if key in inodes and stat.S_ISREG(status.st_mode):
                links.setdefault(key, [status.st_nlink, 0])[1] += 1
    return {key for key, (nlink, ours) in links.items() if nlink > ours}


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

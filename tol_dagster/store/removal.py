"""Removing files and folders from the store, counting the bytes really freed."""

from __future__ import annotations

import stat
from pathlib import Path


def remove_tree(path: Path) -> int:
    """Remove a file or folder; return the bytes really freed (a file's last hard link only)."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(status.st_mode):
        freed = sum(remove_tree(child) for child in path.iterdir())
        path.rmdir()
        return freed
    path.unlink()
    return status.st_size if stat.S_ISREG(status.st_mode) and status.st_nlink == 1 else 0


def children(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted; none if it does not exist."""
    return sorted(folder.iterdir()) if folder.is_dir() else []

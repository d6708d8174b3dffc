"""Free disk: refuse a sync before it fetches what the disk cannot hold."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from tol_dagster.errors import DiskSpaceError


def human_size(size: float) -> str:
    """`size` bytes for people, in binary units: `166.6 MiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_free_disk(path: Path, bytes_needed: int, *, margin: float = 0.05) -> None:
    """Refuse before fetching if `path`'s disk lacks `bytes_needed` plus a `margin` share.

    Pass only new bytes (the resync's `bytes_still_needed`): publishing hard-links, so
    unchanged, staged and partially fetched bytes cost nothing more.
    """
    if bytes_needed <= 0:
        return
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    required = math.ceil(bytes_needed * (1 + margin))
    if required > free:
        raise DiskSpaceError(
            f"not enough free disk for {path}: the sync needs {human_size(bytes_needed)} "
            f"({bytes_needed} bytes, {human_size(required)} with a {margin:.0%} margin) but only "
            f"{human_size(free)} ({free} bytes) is free there. Free at least "
            f"{human_size(required - free)} on that disk, or set TOL_HOME to a folder on a disk with room."
        )

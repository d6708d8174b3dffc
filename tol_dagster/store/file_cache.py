"""Per-file results cached by content: what is computed from one mirror file lives under
`Layout.derived_dir(config, sha256)`, so an unchanged file is never recomputed and a changed one
(new sha256) is computed once, whatever its name.

A kept result that no longer reads (a disk's fault, a hand edit) is removed where it is read and
the command stops with `LocalStorageError` (exit 4) naming it: a missing result is computed
again from its mirror file, so the same command run again succeeds. Healthy reads pay nothing
for this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tol_dagster.errors import LocalStorageError
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

T = TypeVar("T")


def derived_path(layout: Layout, config: str, file: MirrorFile, name: str) -> Path:
    """Where the per-file result `name` of `file` is kept."""
    return layout.derived_dir(config, file.sha256) / name


def read_kept(path: Path, read: Callable[[Path], T]) -> T:
    """`read` of the result kept at `path`; when it does not read as what it should (numpy's
    and Arrow's ValueError, EOFError), the result is removed and LocalStorageError says so."""
    try:
        return read(path)
    except (ValueError, EOFError) as error:
        with contextlib.suppress(OSError):
            path.unlink()
        raise LocalStorageError(
            f"the result kept at {path} was damaged ({error}) and is removed: run the same "
            "command again, and it is computed anew from its mirror file"
        ) from error

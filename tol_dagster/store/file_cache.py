"""Per-file results cached by content: what is computed from one mirror file lives under
`Layout.derived_dir(config, sha256)`, so an unchanged file is never recomputed and a changed one
(new sha256) is computed once, whatever its name."""

from __future__ import annotations

from pathlib import Path

from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile


def derived_path(layout: Layout, config: str, file: MirrorFile, name: str) -> Path:
    """Where the per-file result `name` of `file` is kept."""
    return layout.derived_dir(config, file.sha256) / name

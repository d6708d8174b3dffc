"""Staging: where fetched and verified files of a commit wait until their generation is
published, and the stable partial downloads that a later process resumes."""

from __future__ import annotations

import re
from pathlib import Path

from tol_dagster.store.layout import Layout, check_commit, check_file_name

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PARTIAL_SUFFIX = ".part"


def stage_path(layout: Layout, config: str, commit: str, name: str) -> Path:
    """Where a file of `commit` waits once fetched and verified, until its generation is published."""
    return layout.staging_dir(config, check_commit(commit)) / check_file_name(name)


def partial_path(layout: Layout, config: str, sha256: str) -> Path:
    """The stable partial download of a content: same name across processes, so it resumes."""
    if not _SHA256.match(sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex sha256")
    return layout.partial_dir(config) / f"{sha256}{PARTIAL_SUFFIX}"


def staging_root(layout: Layout, config: str) -> Path:
    """The folder holding one staging folder per commit (Layout names only the per-commit one)."""
    return layout.staging_dir(config, "commit").parent


def staged_files(layout: Layout, config: str, commit: str) -> dict[str, Path]:
    """Files of `commit` already fetched and verified: a retry fetches only the others."""
    folder = layout.staging_dir(config, check_commit(commit))
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".") and path.name.endswith(".parquet")
    }

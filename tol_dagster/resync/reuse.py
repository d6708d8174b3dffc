"""Contents the store already holds, linked into staging instead of downloaded again.

Upstream sometimes reverts a file to bytes a kept generation still holds (the previous one is
kept for the revision diff). Before fetching, each file to fetch whose name and size match a
file of a kept generation is hashed locally; if its sha256 is the Hub's, it is hard-linked into
the commit's staging, where the usual per-file checks and the gate verify it like a download.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tol_dagster.hub.remote import RemoteFile
from tol_dagster.resync.plan import Plan
from tol_dagster.store.generations import kept_generations
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.staging import stage_path, staged_files


def link_kept_contents(
    layout: Layout, config: str, plan: Plan, *, log: Callable[[str], None] = print
) -> list[str]:
    """Hard-link into `plan`'s staging every file to fetch that a kept generation holds with
    the same sha256; returns their names. Local reads only: no request is made."""
    staged = staged_files(layout, config, plan.commit)
    # A content validated here has per-file results under derived/<sha256>/, kept while a kept
    # generation holds it: without them no generation can hold it, and nothing is hashed.
    wanted = [
        f
        for f in plan.to_fetch
        if f.name not in staged and layout.derived_dir(config, f.sha256).is_dir()
    ]
    generations = kept_generations(layout, config) if wanted else []
    linked = []
    for remote_file in wanted:
        source = _holder(generations, remote_file)
        if source is None:
            continue
        target = stage_path(layout, config, plan.commit, remote_file.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
        linked.append(remote_file.name)
        log(
            f"{remote_file.name}: {remote_file.sha256[:12]} is kept in {source.parent.name}; linked, not downloaded"
        )
    return linked


def _holder(generations: list[Path], remote_file: RemoteFile) -> Path | None:
    """A kept file with `remote_file`'s bytes (same name and size, then the same sha256)."""
    hashed: set[int] = set()  # inodes: a file shared by generations is hashed once
    for generation in generations:
        candidate = generation / remote_file.name
        try:
            status = candidate.stat()
        except FileNotFoundError:
            continue
        if status.st_size != remote_file.size or status.st_ino in hashed:
            continue
        hashed.add(status.st_ino)
        if sha256_file(candidate) == remote_file.sha256:
            return candidate
    return None

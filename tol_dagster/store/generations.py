"""The published mirror's generations: which one is current, publishing one by a symlink switch,
and pinning one for a run's reads.

Consumers read `<home>/mirror/<config>/*.parquet`. That path is a symlink to one generation
folder `store/<config>/generations/<commit[:12]>-<n>/` holding hard links to verified files, so
publishing a commit is one `rename` of the symlink (readers see the old commit or the new one,
whole) and unchanged files cost no copy. `n` only grows, so generations order by it.

Kept on disk: the current generation and the one published just before it (the revision diff
by uuid after a resync compares the two), plus the one the manifest names if it differs (a crash
between the switch and the manifest save), plus any superseded less than a grace period ago or
pinned by a run still reading it (see `pins`). Everything else is removed by `cleanup`.
Readers of ours pin a generation once per run (`pin_generation`) and never read through the
symlink, which a publish may switch between two files they open.

One writer per config at a time (the resync pool guarantees it); readers may come any time.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from tol_dagster.errors import StoreError
from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX, fsync_dir, fsync_file, make_public
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout, check_commit, check_file_name
from tol_dagster.store.manifest import load_manifest
from tol_dagster.store.pins import (
    PinnedGeneration,
    read_record,
    record_path,
    take_lease,
    write_record,
)
from tol_dagster.store.removal import remove_tree
from tol_dagster.store.shared_files import shared_inodes

_GENERATION = re.compile(r"^[0-9A-Za-z]{1,12}-(?P<n>[0-9]+)$")


def generation_number(path: Path) -> int | None:
    """The `n` of a generation folder `<commit[:12]>-<n>` (None: not a generation's name)."""
    match = _GENERATION.match(path.name)
    return int(match["n"]) if match else None


def numbered_generations(layout: Layout, config: str) -> list[tuple[int, Path]]:
    """Generation folders with their numbers, oldest first."""
    folder = layout.generations_dir(config)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        number = generation_number(path)
        if number is not None and path.is_dir() and not path.is_symlink():
            found.append((number, path))
    return sorted(found)


def kept_generations(layout: Layout, config: str) -> list[Path]:
    """Every generation folder still on disk (current, previous, a crash's), newest first: the
    places a content reverted upstream can be linked from instead of downloaded again."""
    return [path for _, path in reversed(numbered_generations(layout, config))]


def _hand_made(link: Path) -> StoreError:
    return StoreError(
        f"{link} is a real folder, not the symlink tol-dagster publishes through; refusing to "
        "touch it. Move it elsewhere (it is not managed by tol-dagster) and sync again."
    )


def current_generation(layout: Layout, config: str) -> Path | None:
    """The generation `mirror/<config>` points at (None before the first publish)."""
    link = layout.mirror_dir(config)
    if not link.is_symlink():
        if link.exists():
            raise _hand_made(link)
        return None
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def previous_generation(layout: Layout, config: str) -> Path | None:
    """The generation published just before the current one, if still on disk."""
    current = current_generation(layout, config)
    current_number = None if current is None else generation_number(current)
    if current_number is None:
        return None
    older = [p for number, p in numbered_generations(layout, config) if number < current_number]
    return older[-1] if older else None


def publish_generation(
    layout: Layout,
    config: str,
    *,
    commit: str,
    files: Mapping[str, Path],
    sha256s: Mapping[str, str] | None = None,
) -> Path:
    """Publish exactly `files` (name -> verified source) as the mirror of `commit`, atomically.

    Builds `generations/<commit[:12]>-<n>/` of hard links (sources: the current generation for
    unchanged files, staging for fetched ones), makes it durable, writes its record (each
    file's sha256: `sha256s`, verified by the caller, else hashed here), then switches the
    symlink in one rename. Files are made read-only: they are shared by every generation that
    holds them; except an inode also linked in a user's folder (`shared_files`): its mode is
    the user's. Leftovers of publishes that crashed before their switch are removed after it.
    """
    check_commit(commit)
    for name in files:
        check_file_name(name)
    if sha256s is not None and set(sha256s) != set(files):
        raise ValueError("sha256s must name exactly the files published")
    link = layout.mirror_dir(config)
    old = current_generation(layout, config)  # raises on a hand-made folder, before any change
    old_number = 0 if old is None else (generation_number(old) or 0)
    existing = numbered_generations(layout, config)
    number = max((n for n, _ in existing), default=0) + 1
    generations = layout.generations_dir(config)
    generations.mkdir(parents=True, exist_ok=True)
    generation = generations / f"{commit[:12]}-{number}"
    generation.mkdir()
    users = shared_inodes(layout, config)
    try:
        for name, source in sorted(files.items()):
            fsync_file(source)
            target = generation / name
            os.link(source, target)
            status = target.stat()
            if (status.st_dev, status.st_ino) not in users:
                make_public(target, read_only=True)
        fsync_dir(generation)
        digests = {
            name: sha256s[name] if sha256s is not None else sha256_file(generation / name)
            for name in files
        }
        write_record(layout, config, generation.name, commit, digests, time.time())
        fsync_dir(generations)
        _switch_symlink(link, generation)
    except BaseException:
        remove_tree(generation)
        record_path(layout, config, generation.name).unlink(missing_ok=True)
        raise
    for n, path in existing:
        if n > old_number:  # built after the old current and never published: a crash's leftover
            remove_tree(path)
            record_path(layout, config, path.name).unlink(missing_ok=True)
    return generation


def pin_generation(layout: Layout, config: str, *, lease: bool = True) -> PinnedGeneration:
    """The current generation of `config`, resolved once, with its own file -> sha256 map.

    Read only `pin.path`'s files (`pin.mirror_files()`), never the symlink, and key results by
    `pin.files`. With `lease` (use it as a context manager, or `release()`), cleanup keeps the
    generation while the pin is held. A generation published before records existed is paired
    with the manifest only if the manifest names it. Raises `StoreError` before the first sync.
    """
    for _ in range(100):
        current = current_generation(layout, config)
        if current is None:
            raise StoreError(
                f"{config}: no mirror is published under {layout.home} yet; run `tol-dagster "
                f"sync` (or materialize tol/{config}/mirror) first"
            )
        handle = take_lease(layout, config, current.name) if lease else None
        pinned = _pinned(layout, config, current, handle)
        if pinned is not None:
            return pinned
        if handle is not None:
            handle.close()
        time.sleep(0.01)  # removed between the readlink and the lease, or mid-publish: again
    raise StoreError(
        f"{config}: {layout.mirror_dir(config)} points at a generation without a record of its "
        "files, and the manifest describes another one; run `tol-dagster sync` to publish "
        "a generation with its record"
    )


def pin_named(layout: Layout, config: str, name: str) -> PinnedGeneration:
    """Generation `name` of `config`, leased again: a later step of the run that pinned it
    (maybe on another machine) reads what its first step read, whatever was published since.

    Raises `StoreError` if the generation was removed meanwhile (superseded longer than
    TOL_GENERATION_GRACE_S ago with no lease held).
    """
    generation = layout.generations_dir(config) / name
    pinned = None
    if generation.is_dir():  # no lease file for a generation long gone
        handle = take_lease(layout, config, name)
        pinned = _pinned(layout, config, generation, handle)
        if pinned is None:
            handle.close()
    if pinned is None:
        raise StoreError(
            f"{config}: generation {name}, which this run started reading, was removed before "
            "this step ran (superseded and unleased for TOL_GENERATION_GRACE_S); materialize "
            "again to read the current generation"
        )
    return pinned


def _pinned(
    layout: Layout, config: str, generation: Path, handle: IO[bytes] | None
) -> PinnedGeneration | None:
    if not generation.is_dir():
        return None
    number = generation_number(generation) or 0
    record = read_record(layout, config, generation.name)
    if record is not None:
        return PinnedGeneration(config, generation, number, record.files, record.commit, handle)
    manifest = load_manifest(layout, config)
    if manifest is None or manifest.generation != generation.name:
        return None
    files = {e.name: e.sha256 for e in manifest.entries}
    return PinnedGeneration(config, generation, number, files, manifest.upstream_commit, handle)


def _switch_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` with one rename; a reader never sees it missing or half-made."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temp = link.parent / f"{TEMP_PREFIX}{link.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    os.symlink(os.path.relpath(target, link.parent), temp)  # relative: the home can move
    try:
        if link.exists() and not link.is_symlink():
            raise _hand_made(link)
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(link.parent)

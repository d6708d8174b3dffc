"""What the derived outputs were built from, so only what a resync affected is rebuilt.

Dagster cannot know which slice depends on which mirror file: that mapping is in the data (the
taxon index). This module keeps the small state that lets a sensor decide: the mirror files
(name -> sha256) each derived output was last built from, and the taxon index that went with
the previous build. It also says what a build reads: the published mirror's files and schema.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.derived.table_audit import DERIVED_TABLES, table_path
from tol_dagster.errors import StoreError
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.generations import pin_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration
from tol_dagster.store.rebuildable import read_rebuildable


def mirror_inputs(layout: Layout, config: str) -> tuple[Manifest, list[MirrorFile]]:
    """The published mirror's manifest and files; a clear error when nothing is published yet.

    The files are those of the generation current when called, with their own sha256s, at
    paths that do not move (see `pins`); the manifest may describe the next one if a publish
    lands in between. A run that reads the files uses `mirror.pin_generation` instead.
    """
    manifest = load_manifest(layout, config)
    if manifest is None:
        raise StoreError(
            f"{config}: no mirror is published under {layout.home} yet; run `tol-dagster sync` "
            f"(or materialize tol/{config}/mirror) first"
        )
    return manifest, pin_generation(layout, config, lease=False).mirror_files()


def pinned_schema(layout: Layout, pinned: PinnedGeneration) -> pa.Schema:
    """The schema of the pinned generation: the manifest's when it describes that generation
    (the accepted, possibly extended schema), else its first file's footer."""
    manifest = load_manifest(layout, pinned.config)
    if manifest is not None and manifest.generation == pinned.name and manifest.schema:
        return manifest.schema
    files = pinned.mirror_files()
    if not files:
        raise StoreError(f"{pinned.config}: generation {pinned.name} holds no file to read")
    return pq.read_schema(files[0].path)


def file_map(files: list[MirrorFile]) -> dict[str, str]:
    """name -> sha256 of `files`: what a build read, compared by `changed_files`."""
    return {f.name: f.sha256 for f in files}


def changed_files(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Files added, removed or changed (by sha256) between two builds."""
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}


# --- what each derived output was built from -------------------------------------------------


class Generation(Protocol):
    """A generation's identity: a `Manifest` or a `PinnedGeneration`."""

    @property
    def generation(self) -> str: ...

    @property
    def upstream_commit(self) -> str: ...


@dataclass(frozen=True)
class BuiltFrom:
    """The mirror generation (and its files) an output was last built from."""

    generation: str
    upstream_commit: str
    files: dict[str, str]


def published_tables_read(layout: Layout, config: str) -> bool:
    """Whether the footer of every published derived table reads: one missing or damaged (a
    disk's fault, a hand edit) makes them stale, so that the next build writes them anew."""
    try:
        for table in DERIVED_TABLES:
            pq.read_metadata(table_path(layout, config, table))
    except (OSError, pa.ArrowException):  # missing, or not parquet
        return False
    return True


def _built_path(layout: Layout, config: str, output: str) -> Path:
    return layout.state_dir(config) / f"built-{output}.json"


def load_built_from(layout: Layout, config: str, output: str) -> BuiltFrom | None:
    """What `output` (summaries, taxon_index) was last built from; None before its first build."""
    return read_rebuildable(_built_path(layout, config, output), _parse_built_from)


def _parse_built_from(text: str) -> BuiltFrom:
    return BuiltFrom(**json.loads(text))


def _document(built: BuiltFrom) -> bytes:
    return json.dumps(asdict(built), indent=1).encode()


def save_built_from(
    layout: Layout, config: str, output: str, manifest: Generation, files: list[MirrorFile]
) -> None:
    """Record that `output` was just built from `files` of generation `manifest`."""
    built = BuiltFrom(manifest.generation, manifest.upstream_commit, file_map(files))
    write_atomic(_built_path(layout, config, output), _document(built))


# --- the taxon index of the previous build ----------------------------------------------------


def previous_index_path(layout: Layout, config: str) -> Path:
    """Where the taxon index of the build before the current one is kept."""
    return layout.state_dir(config) / "taxon_index.previous.parquet"


def _previous_built_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "built-taxon_index.previous.json"


def keep_previous_index(layout: Layout, config: str) -> None:
    """Before the index is rebuilt, keep the current one: the slices sensor diffs the two. An
    index whose build record is missing or damaged is not kept, and an older one is dropped:
    with no previous index, every slice is rebuilt. The previous record goes first and comes
    back last, whole: a process killed in between leaves no previous index, never an index
    paired with another one's record."""
    current, target = layout.taxon_index_path(config), previous_index_path(layout, config)
    previous_built = _previous_built_path(layout, config)
    previous_built.unlink(missing_ok=True)
    built = load_built_from(layout, config, "taxon_index")
    if current.is_file() and built is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, target)
        write_atomic(previous_built, _document(built))
    else:
        target.unlink(missing_ok=True)


def previous_index(layout: Layout, config: str) -> tuple[pa.Table | None, dict[str, str]]:
    """The index (and its files) from before the last rebuild; (None, {}) before any, or when
    its build record is damaged."""
    path = previous_index_path(layout, config)
    built = _previous_built_path(layout, config)
    files = read_rebuildable(built, lambda text: dict(json.loads(text)["files"]))
    if not path.is_file() or files is None:
        return None, {}
    return pq.read_table(path), files

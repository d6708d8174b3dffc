"""Per-file results cached by content, and atomic publication of the tables built from them.

A result computed from one mirror file lives under `Layout.derived_dir(config, sha256)`, so an
unchanged file is never recomputed and a changed one (new sha256) is computed once, whatever
its name. Parts are Arrow IPC files followed by their crc32 (`file_cache.keep_table`: a
flipped byte would otherwise be summed into a table as published): a recombination reads one
per mirror file, and IPC reads them ~15x faster than parquet would. Large published tables
are written in segments of consecutive files (`publish_segments`), so an update copies the
unchanged segments' bytes from the version it replaces. Every write goes through
`store.durable.atomic_path` (a temp file in the target's folder, fsynced and renamed into
place), so a reader sees the old table or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import LocalStorageError
from tol_dagster.parquet.segmented import Segment, Written, write_segmented
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import (
    derived_path,
    derived_paths,
    drop_older_versions,
    keep_table,
    kept_crc32,
    kept_table,
    read_kept,
)
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.verified import still_noted, verify

_log = logging.getLogger(__name__)

#: Published tables are cut into at most this many segments of consecutive mirror files. An
#: update encodes the segments it changed and copies the others, but every row group costs
#: ~1 ms of footer work in Python (parsed, moved, written), so more segments stop paying: at 40
#: files of upstream's size, 16 segments updated in 0.09 of a rebuild's time, 40 in 0.14.
MAX_SEGMENTS = 16


def stale_files(
    files: Sequence[MirrorFile], layout: Layout, config: str, name: str, *, force: bool = False
) -> list[MirrorFile]:
    """The files without a result `name` yet (every file when `force`), in order."""
    if force:
        return list(files)
    paths = derived_paths(layout, config, files, name)
    return [f for f, path in zip(files, paths, strict=True) if not os.path.isfile(path)]


def files_to_compute(
    files: Sequence[MirrorFile], layout: Layout, config: str, name: str, *, force: bool = False
) -> list[MirrorFile]:
    """`stale_files`, each verified to hash to its sha256 unless the gate or a build just did
    (`store.verified`): the part is kept by that sha256, so it must be of those bytes."""
    stale = stale_files(files, layout, config, name, force=force)
    verify(stale, layout, config)
    return stale


def read_part(
    layout: Layout, config: str, file: MirrorFile, name: str, recompute: Callable[[], object]
) -> pa.Table:
    """The result `name` of `file`, as `write_part` kept it (checked, memory-mapped); one found
    damaged is removed, computed anew by `recompute` (a warning says so) from the mirror file,
    once its bytes still hash to its sha256 (StoreError otherwise), and read again: rot in a
    cache fails no build, and never reaches a published table. So is one gone since the build
    computed its parts (a resync that fetched its file again forgot it: `forget_content`)."""
    path = derived_path(layout, config, file, name)
    try:
        return read_kept(path, kept_table)
    except (LocalStorageError, FileNotFoundError) as error:
        why = "gone" if isinstance(error, FileNotFoundError) else f"damaged ({error.__cause__})"
        _log.warning("%s is %s: it is computed anew from %s", path, why, file.path)
        verify([file], layout, config, within=0)  # the same disk may have rotted the file
        recompute()
        return read_kept(path, kept_table)


def split_by_file(
    table: pa.Table, files: Sequence[MirrorFile]
) -> list[tuple[MirrorFile, pa.Table]]:
    """Each file's rows of a DuckDB result over `files`, by its `file_index` column (dropped).

    Rows keep their order within a file; a file with no rows gets an empty table.
    """
    table = table.sort_by("file_index")  # stable
    bounds = np.searchsorted(table["file_index"].to_numpy(), np.arange(len(files) + 1)).tolist()
    table = table.drop_columns(["file_index"])
    return [
        (file, table.slice(start, end - start))
        for file, start, end in zip(files, bounds, bounds[1:], strict=False)
    ]


def write_part(table: pa.Table, layout: Layout, config: str, file: MirrorFile, name: str) -> None:
    """Keep `table` as the result `name` of `file` (atomically, like every write here), once
    `file` is still verified: a resync that found it drifted while `table` was computed from
    it has dropped its note (`forget_content`), and the file is then hashed first (a note
    read and a stat otherwise). A note trusted must still stand once the part is in place: a
    drop during the write itself removes the part again, and the file is hashed (StoreError
    if it drifted) before the part is kept."""
    path = derived_path(layout, config, file, name)
    kept = False
    if not verify([file], layout, config):  # a recent note trusted, not the file hashed now
        kept = _kept_while_noted(table, path, layout, config, file)
        if not kept:
            verify([file], layout, config, within=0)
    if not kept:
        keep_table(path, table)
    drop_older_versions(path)


def _kept_while_noted(
    table: pa.Table, path: Path, layout: Layout, config: str, file: MirrorFile
) -> bool:
    """Keep `table` at `path`; whether the note of `file` still stands once it is there
    (`forget_content` removes the note with the results): otherwise nothing is left at `path`."""
    try:
        keep_table(path, table)
    except FileNotFoundError:  # the folder renamed away under the write
        return False
    if still_noted(layout, config, file):
        return True
    path.unlink(missing_ok=True)
    return False


def read_published(path: Path, asset: str) -> pa.Table:
    """A published table; FileNotFoundError names the asset that builds it, LocalStorageError
    (exit 4) the one that writes it anew when it no longer reads."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not built yet; materialize {asset}")
    try:
        return pq.read_table(path)
    except pa.ArrowException as error:  # not parquet, or a page that does not decode
        raise LocalStorageError(
            f"the published table {path} is damaged ({error}): materialize {asset} to write it "
            "anew (`tol-dagster slice KEY` does, when its footer is what is damaged)"
        ) from error


def publish_table(table: pa.Table, path: Path, **options: Any) -> None:
    """Publish `table` as parquet at `path`, atomically (`options` go to `pq.write_table`)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **({"compression": "zstd"} | options))


def file_groups(files: Sequence[MirrorFile]) -> list[Sequence[MirrorFile]]:
    """`files` cut into at most MAX_SEGMENTS runs of consecutive files of one size (the last
    shorter): a published table's segments, each rewritten only when one of its files changed."""
    size = max(1, math.ceil(len(files) / MAX_SEGMENTS))
    return [files[start : start + size] for start in range(0, len(files), size)]


def part_crcs(
    files: Sequence[MirrorFile], layout: Layout, config: str, name: str
) -> dict[str, int | None]:
    """The crc32 of each file's part `name` by file name (None: no part), from its last bytes:
    what the tables built from the parts are keyed by (`content_key`, the summaries' facts)."""
    paths = derived_paths(layout, config, files, name)
    return {f.name: kept_crc32(path) for f, path in zip(files, paths, strict=True)}


def content_key(files: Sequence[MirrorFile], crcs: Mapping[str, int | None], *extra: object) -> str:
    """A segment's key: the names and contents of the files it was computed from, the crc32s
    of their parts (`part_crcs`: a part computed anew from the same content, after its file
    was repaired, gives other rows), and any `extra` its rows depend on."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file.sha256}\0{crcs[file.name]}\0".encode())
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:32]


def publish_segments(
    segments: Sequence[Segment],
    path: Path,
    schema: pa.Schema,
    *,
    layout: str,
    reuse: bool = True,
    **options: Any,
) -> Written:
    """Publish `segments` as one parquet table at `path`, atomically, copying from the version
    published there the segments it holds under the same key (none unless `reuse`)."""
    with atomic_path(path) as tmp:
        return write_segmented(
            tmp, schema, segments, layout=layout, previous=path if reuse else None, **options
        )

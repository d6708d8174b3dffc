"""Per-file results cached by content, and atomic publication of the tables built from them.

A result computed from one mirror file lives under `Layout.derived_dir(config, sha256)`, so an
unchanged file is never recomputed and a changed one (new sha256) is computed once, whatever
its name. Parts are Arrow IPC files: a recombination reads one per mirror file, and IPC reads
them ~15x faster than parquet would. Every write goes through `store.durable.atomic_path` (a
temp file in the target's folder, fsynced and renamed into place), so a reader sees the old
table or the new one, never half of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import derived_path
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile


def stale_files(
    files: Sequence[MirrorFile], layout: Layout, config: str, name: str, *, force: bool = False
) -> list[MirrorFile]:
    """The files without a result `name` yet (every file when `force`), in order."""
    return [f for f in files if force or not derived_path(layout, config, f, name).is_file()]


def read_part(layout: Layout, config: str, file: MirrorFile, name: str) -> pa.Table:
    """The result `name` of `file`, as `write_part` kept it."""
    with pa.memory_map(str(derived_path(layout, config, file, name))) as source:
        return pa.ipc.open_file(source).read_all()


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
    """Keep `table` as the result `name` of `file` (atomically, like every write here)."""
    with atomic_path(derived_path(layout, config, file, name)) as tmp:
        feather.write_feather(table, tmp, compression="uncompressed")


def read_published(path: Path, asset: str) -> pa.Table:
    """A published table; FileNotFoundError names the asset that builds it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not built yet; materialize {asset}")
    return pq.read_table(path)


def publish_table(table: pa.Table, path: Path, **options: Any) -> None:
    """Publish `table` as parquet at `path`, atomically (`options` go to `pq.write_table`)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **({"compression": "zstd"} | options))

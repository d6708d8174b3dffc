"""The catalog file of published slices: its schema, its rows, and its single writer.

`<TOL_HOME>/published/<config>/catalog.parquet` holds one row per slice with the columns of
`CATALOG_SCHEMA` (for a path key, `rank` and `value` are those of its last condition). It has a
single writer (the catalog asset; the command line's `slices remove` takes the same lock), and
every rewrite is atomic (`store.durable.atomic_path`), so readers never see half a catalog.
Users read it through `tol_dagster.catalog`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.errors import LocalStorageError, SliceSpecError
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.slices.records import slice_file
from tol_dagster.store.durable import atomic_path, file_lock
from tol_dagster.store.layout import Layout

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("config", pa.string()),
        pa.field("name", pa.string()),
        pa.field("rank", pa.string()),
        pa.field("value", pa.string()),
        pa.field("path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("upstream_commit", pa.string()),
        pa.field("built_at", pa.timestamp("us", tz="UTC")),
    ]
)


def read_catalog(layout: Layout, config: str, *, damaged_as_empty: bool = False) -> pa.Table:
    """The catalog of `config` (empty, with the full schema, before the first slice). One that
    no longer reads raises LocalStorageError (exit 4) saying how it is written anew, unless
    `damaged_as_empty`: its writer, which rewrites it from the slice records."""
    path = layout.catalog_path(config)
    if not path.is_file():
        return CATALOG_SCHEMA.empty_table()
    try:
        return pq.read_table(path, schema=CATALOG_SCHEMA)
    except pa.ArrowException as error:  # not parquet, a page that does not decode
        if damaged_as_empty:
            return CATALOG_SCHEMA.empty_table()
        raise LocalStorageError(
            f"the slice catalog {path} is damaged ({error}): build any slice (`tol-dagster "
            f"slice KEY`), or materialize tol/{config}/catalog in the UI, to write it anew "
            "from the slice records"
        ) from error


def upsert_rows(
    layout: Layout, config: str, rows: pa.Table, keep: Collection[str] | None = None
) -> pa.Table:
    """Add or replace (by name) `rows` in `config`'s catalog, keeping those of its other rows
    named in `keep` (all when None), in one atomic rewrite; returns the new catalog. Why one
    rewrite, in columns: a refresh may drop hundreds of thousands of slices (a rank's raised
    `min_rows`), and refreshing 868,000 species' rows took 1.95 GB and 42 CPU s as Python
    objects, ~1 GB and 9 s as columns."""
    wrong = rows.filter(pc.not_equal(rows["config"], config))["name"].to_pylist()
    if wrong:
        raise ValueError(f"catalog of {config}: rows {wrong[:10]} belong to another config")
    with _locked(layout, config):
        old = read_catalog(layout, config, damaged_as_empty=True)
        others = pc.invert(pc.is_in(old["name"], rows["name"]))
        if keep is not None:
            others = pc.and_(others, pc.is_in(old["name"], pa.array(list(keep), pa.string())))
        rows = rows.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
        return _publish(layout, config, pa.concat_tables([old.filter(others), rows]))


def catalog_rows(layout: Layout, config: str, records: Iterable[dict[str, Any]]) -> pa.Table:
    """The catalog rows of slice `records` (`records.slice_records`), read a batch at a time:
    never a Python object per row of the whole catalog. Paths are those of this home (a
    record keeps the one of the home it was written in)."""
    batches, records, folder = [], iter(records), layout.slices_dir(config)
    while batch := list(itertools.islice(records, ROWS_A_BATCH)):
        columns: dict[str, list[Any]] = {
            "config": [config] * len(batch),
            **{c: [str(r[c]) for r in batch] for c in _TEXT},
            "path": [str(slice_file(folder, r["name"], str(r["path"]))) for r in batch],
            **{c: [int(str(r[c])) for r in batch] for c in ("rows", "bytes")},
            "built_at": [datetime.fromisoformat(str(r["built_at"])) for r in batch],
        }
        batches.append(pa.RecordBatch.from_pydict(columns, schema=CATALOG_SCHEMA))
    return pa.Table.from_batches(batches, schema=CATALOG_SCHEMA)


#: Records turned into catalog rows at a time.
ROWS_A_BATCH = 65_536
#: A record's fields the catalog keeps as text (and `path`, of this home).
_TEXT = ("name", "rank", "value", "sha256", "upstream_commit")


def remove_entry(layout: Layout, config: str, name: str) -> bool:
    """Drop the slice `name` (any spelling of its key, or the raw name of a row whose key no
    longer parses) from the catalog; False if absent."""
    try:
        names = {parse_slice_key(name).name, name}
    except SliceSpecError:
        names = {name}
    with _locked(layout, config):
        rows = read_catalog(layout, config, damaged_as_empty=True)
        kept = rows.filter(pc.invert(pc.is_in(rows["name"], pa.array(list(names), pa.string()))))
        if kept.num_rows == rows.num_rows:
            return False
        _publish(layout, config, kept)
        return True


def _publish(layout: Layout, config: str, rows: pa.Table) -> pa.Table:
    """Write the catalog sorted by name, atomically."""
    table = rows.sort_by("name")
    with atomic_path(layout.catalog_path(config)) as temp:
        pq.write_table(table, temp, compression="zstd")
    return table


def _locked(layout: Layout, config: str) -> contextlib.AbstractContextManager[None]:
    """Serialize catalog rewrites (the asset, and `slices remove` from the command line)."""
    return file_lock(layout.state_dir(config) / "catalog.lock")

"""The catalog file of published slices: its schema, its rows, and its single writer.

`<TOL_HOME>/published/<config>/catalog.parquet` holds one row per slice with the columns of
`CATALOG_SCHEMA` (for a path key, `rank` and `value` are those of its last condition). It has a
single writer (the catalog asset; the command line's `slices remove` takes the same lock), and
every rewrite is atomic (`store.durable.atomic_path`), so readers never see half a catalog.
Users read it through `tol_dagster.catalog`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import SliceSpecError
from tol_dagster.slices.keys import SliceKey, parse_slice_key
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


@dataclass(frozen=True)
class CatalogEntry:
    """One published slice, as a catalog row."""

    config: str
    name: str
    rank: str
    value: str
    path: str
    rows: int
    bytes: int
    sha256: str
    upstream_commit: str | None
    built_at: datetime

    @classmethod
    def for_slice(
        cls,
        config: str,
        key: SliceKey,
        path: Path,
        *,
        rows: int,
        bytes: int,
        sha256: str,
        upstream_commit: str | None,
        built_at: datetime | None = None,
    ) -> CatalogEntry:
        """The entry of the slice `key` published at `path` (built now unless told)."""
        return cls(
            config=config,
            name=key.name,
            rank=key.rank,
            value=key.value,
            path=str(Path(path).resolve()),
            rows=rows,
            bytes=bytes,
            sha256=sha256,
            upstream_commit=upstream_commit,
            built_at=(built_at or datetime.now(UTC)).astimezone(UTC),
        )


def read_catalog(layout: Layout, config: str) -> pa.Table:
    """The catalog of `config` (empty, with the full schema, before the first slice)."""
    path = layout.catalog_path(config)
    if not path.is_file():
        return CATALOG_SCHEMA.empty_table()
    return pq.read_table(path, schema=CATALOG_SCHEMA)


def upsert_entries(layout: Layout, config: str, entries: Iterable[CatalogEntry]) -> pa.Table:
    """Add or replace (by name) `entries` in `config`'s catalog; returns the new catalog."""
    new = list(entries)
    wrong = [e.name for e in new if e.config != config]
    if wrong:
        raise ValueError(f"catalog of {config}: entries {wrong} belong to another config")
    with _locked(layout, config):
        names = {e.name for e in new}
        rows = [r for r in read_catalog(layout, config).to_pylist() if r["name"] not in names]
        rows += [asdict(e) for e in new]
        return _publish(layout, config, rows)


def remove_entry(layout: Layout, config: str, name: str) -> bool:
    """Drop the slice `name` (any spelling of its key, or the raw name of a row whose key no
    longer parses) from the catalog; False if absent."""
    try:
        names = {parse_slice_key(name).name, name}
    except SliceSpecError:
        names = {name}
    with _locked(layout, config):
        rows = read_catalog(layout, config).to_pylist()
        kept = [r for r in rows if r["name"] not in names]
        if len(kept) == len(rows):
            return False
        _publish(layout, config, kept)
        return True


def _publish(layout: Layout, config: str, rows: list[dict[str, object]]) -> pa.Table:
    """Write the catalog sorted by name, atomically."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: str(r["name"])), schema=CATALOG_SCHEMA)
    with atomic_path(layout.catalog_path(config)) as temp:
        pq.write_table(table, temp, compression="zstd")
    return table


def _locked(layout: Layout, config: str) -> contextlib.AbstractContextManager[None]:
    """Serialize catalog rewrites (the asset, and `slices remove` from the command line)."""
    return file_lock(layout.state_dir(config) / "catalog.lock")

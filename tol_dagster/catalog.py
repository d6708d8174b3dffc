"""The catalog of published slices, and the Python API to read them.

`<TOL_HOME>/published/<config>/catalog.parquet` holds one row per slice with the columns of
`CATALOG_SCHEMA` (for a path key, `rank` and `value` are those of its last condition). It has a
single writer (the catalog asset; the command line's `slices remove` takes the same lock), and
every rewrite is atomic, so readers never see half a catalog.

Readers (`list_slices`, `read_arrow`, `read_pandas`, `read_duckdb`) resolve `config=None` to the
only published config, else to the first of `TOL_CONFIGS` that is published.

`mirror_files` gives the mirror itself as paths pinned to one generation: a query over them
sees one upstream commit even if a publish switches `mirror/<config>` meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import SliceNotPublished, SliceSpecError, StoreError
from tol_dagster.settings import Settings
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store import generations as mirror
from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX, file_lock, fsync_dir, make_public
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


# --- writing --------------------------------------------------------------------------------


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
    """Write the catalog sorted by name: temp file, fsync, rename, fsync the folder."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: str(r["name"])), schema=CATALOG_SCHEMA)
    path = layout.catalog_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX
    )
    try:
        make_public(fd)
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return table


def _locked(layout: Layout, config: str) -> contextlib.AbstractContextManager[None]:
    """Serialize catalog rewrites (the asset, and `slices remove` from the command line)."""
    return file_lock(layout.state_dir(config) / "catalog.lock")


# --- reading (the public Python API) -----------------------------------------------------------


def list_slices(config: str | None = None, home: Path | str | None = None) -> pd.DataFrame:
    """The published slices of `config` (every published config when None), one row each."""
    layout = _layout(home)
    configs = [config] if config is not None else published_configs(layout)
    tables = [read_catalog(layout, c) for c in configs]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    return table.to_pandas()


def read_arrow(key: str | SliceKey, config: str | None = None) -> pa.Table:
    """The slice `key` as an Arrow table (exact schema: `emb` is fixed_size_list<halffloat>)."""
    return pq.read_table(slice_path(key, config))


def read_pandas(key: str | SliceKey, config: str | None = None) -> pd.DataFrame:
    """The slice `key` as a pandas DataFrame."""
    return read_arrow(key, config).to_pandas()


def read_duckdb(
    key: str | SliceKey | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    config: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """The slice `key` as a lazy DuckDB relation on `con` (DuckDB's default connection if None);
    with no key, the whole mirror, pinned to its current generation (see `mirror_files`)."""
    connection = con or duckdb.default_connection()
    if key is None:
        return connection.read_parquet([str(path) for path in mirror_files(config)])
    return connection.read_parquet(str(slice_path(key, config)))


def mirror_files(config: str | None = None, home: Path | str | None = None) -> list[Path]:
    """The mirror's parquet files, in the dataset's global order, pinned to the generation
    current now: read these rather than the `mirror/<config>/*.parquet` glob.

    The glob goes through a symlink that each publish switches, so a query that opens files
    across a switch can mix two upstream commits. These paths name the generation's own folder:
    they stay unchanged and readable for at least TOL_GENERATION_GRACE_S (default 3600) after a
    later publish supersedes them, and while any run of tol-dagster still reads them. Call again
    for the newest generation. `config=None`: the only mirrored config, else the first of
    TOL_CONFIGS that is mirrored.
    """
    layout = _layout(home)
    return mirror.pin_generation(layout, _mirrored_config(layout, config), lease=False).paths()


def _mirrored_config(layout: Layout, config: str | None) -> str:
    if config is not None:
        return config
    root = layout.home / "mirror"
    mirrored = sorted(p.name for p in root.iterdir() if p.is_symlink()) if root.is_dir() else []
    if len(mirrored) == 1:
        return mirrored[0]
    preferred = [c for c in Settings.from_env().configs if c in mirrored]
    if not preferred:
        found = ", ".join(mirrored) or "none"
        raise StoreError(
            f"no mirror to choose under {root} (mirrored configs: {found}); run "
            "`tol-dagster sync`, or pass config=... to choose one"
        )
    return preferred[0]


def slice_path(
    key: str | SliceKey, config: str | None = None, home: Path | str | None = None
) -> Path:
    """Where the published slice `key` is; `SliceNotPublished` says how to build it if absent."""
    layout = _layout(home)
    slice_key = key if isinstance(key, SliceKey) else parse_slice_key(key)
    config = resolve_config(layout, config)
    catalog = read_catalog(layout, config)
    hits = catalog.filter(pa.compute.equal(catalog["name"], slice_key.name))
    path = Path(hits["path"][0].as_py()) if hits.num_rows else None
    if path is None or not path.is_file():
        state = "is not published" if path is None else f"is in the catalog but {path} is missing"
        raise SliceNotPublished(
            f"slice {slice_key.name!r} of {config} {state}; build it with "
            f"`tol-dagster slice '{slice_key.name}' --config {config}` "
            "(`tol-dagster slices list` shows what is published)"
        )
    return path


def published_configs(layout: Layout) -> list[str]:
    """Configs with a catalog under `<home>/published`, sorted."""
    root = layout.home / "published"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if layout.catalog_path(p.name).is_file())


def resolve_config(layout: Layout, config: str | None) -> str:
    """`config`, else the only published one, else the first of TOL_CONFIGS that is published."""
    if config is not None:
        return config
    published = published_configs(layout)
    if len(published) == 1:
        return published[0]
    if not published:
        raise SliceNotPublished(
            f"no slices are published under {layout.home / 'published'}; build one with "
            "`tol-dagster slice KEY` (for example `tol-dagster slice family=Felidae`)"
        )
    preferred = [c for c in Settings.from_env().configs if c in published]
    if not preferred:
        raise SliceNotPublished(
            f"slices are published for several configs ({', '.join(published)}) and TOL_CONFIGS "
            "names none of them; pass config=... to choose"
        )
    return preferred[0]


def _layout(home: Path | str | None) -> Layout:
    return Layout(Path(home)) if home is not None else Settings.from_env().layout

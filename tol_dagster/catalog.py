"""The Python API to read published slices and the mirror: the project's public facade.

`<TOL_HOME>/published/<config>/catalog.parquet` holds one row per slice (its columns and its
single writer: `slices.catalog_file`); every rewrite is atomic, so readers never see half a
catalog.

Readers (`list_slices`, `read_arrow`, `read_pandas`, `read_duckdb`) resolve `config=None` to the
only published config, else to the first of `TOL_CONFIGS` that is published.

`mirror_files` gives the mirror itself as paths pinned to one generation: a query over them
sees one upstream commit even if a publish switches `mirror/<config>` meanwhile.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import LocalStorageError, SliceNotPublished, StoreError
from tol_dagster.settings import Settings
from tol_dagster.slices.catalog_file import CATALOG_SCHEMA, read_catalog
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.slices.records import slice_file, slice_record_of
from tol_dagster.store import generations
from tol_dagster.store.layout import Layout


def list_slices(config: str | None = None, home: Path | str | None = None) -> pd.DataFrame:
    """The published slices of `config` (every published config when None), one row each."""
    layout = _layout(home)
    configs = [config] if config is not None else published_configs(layout)
    tables = [read_catalog(layout, c) for c in configs]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    return table.to_pandas()


def read_arrow(key: str | SliceKey, config: str | None = None, *, verify: bool = False) -> pa.Table:
    """The slice `key` as an Arrow table (exact schema: `emb` is fixed_size_list<halffloat>);
    LocalStorageError naming the file and the command that rebuilds it if it no longer reads,
    or, with `verify`, if its bytes no longer hash to the sha256 the catalog gives, nor to the
    one its record gives (a slice published since the catalog was written). One more pass over
    the file, from the same open file as the read: a publish meanwhile cannot mix."""
    path, sha256 = _published(key, config)
    rebuild = f"rebuild it with `tol-dagster slice {shlex.quote(_name(key))}`"
    with pa.memory_map(str(path)) as source:
        if verify:
            found = hashlib.sha256(source.read_buffer()).hexdigest()
            if found != sha256 and not _published_since(key, config, found):
                raise LocalStorageError(
                    f"the slice file {path} no longer has the sha256 the catalog gives "
                    f"({sha256[:12]}..., now {found[:12]}...): its bytes changed on disk; {rebuild}"
                )
            source.seek(0)
        try:
            return pq.read_table(source)
        except pa.ArrowException as error:  # not parquet, or a page that does not decode
            raise LocalStorageError(
                f"the slice file {path} is damaged ({error}): {rebuild}"
            ) from error


def read_pandas(
    key: str | SliceKey, config: str | None = None, *, verify: bool = False
) -> pd.DataFrame:
    """The slice `key` as a pandas DataFrame (`verify`: as for `read_arrow`)."""
    return read_arrow(key, config, verify=verify).to_pandas()


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
    return generations.pin_generation(layout, _mirrored_config(layout, config), lease=False).paths()


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
    return _published(key, config, home)[0]


def _name(key: str | SliceKey) -> str:
    """The canonical name of `key` (SliceSpecError if it does not parse)."""
    return key.name if isinstance(key, SliceKey) else parse_slice_key(key).name


def _published(
    key: str | SliceKey, config: str | None = None, home: Path | str | None = None
) -> tuple[Path, str]:
    """The published slice `key`'s path and sha256, from the catalog (see `slice_path`)."""
    layout = _layout(home)
    name = _name(key)
    config = resolve_config(layout, config)
    catalog = read_catalog(layout, config)
    hits = catalog.filter(pa.compute.equal(catalog["name"], name))
    folder = layout.slices_dir(config)
    path = slice_file(folder, name, hits["path"][0].as_py()) if hits.num_rows else None
    if path is None or not path.is_file():
        state = "is not published" if path is None else f"is in the catalog but {path} is missing"
        raise SliceNotPublished(
            f"slice {name!r} of {config} {state}; build it with "
            f"`tol-dagster slice '{name}' --config {config}` "
            "(`tol-dagster slices list` shows what is published)"
        )
    return path, str(hits["sha256"][0].as_py())


def _published_since(key: str | SliceKey, config: str | None, sha256: str) -> bool:
    """Whether the slice's record gives `sha256`: a rebuild the catalog has not followed yet
    (its writer runs after the slice's publish)."""
    layout = _layout(None)
    record = slice_record_of(layout, resolve_config(layout, config), _name(key))
    return record is not None and record.get("sha256") == sha256


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

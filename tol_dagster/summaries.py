"""Summary tables of a config's mirror: image counts per lineage, rank, image type, record
basis and publisher, and per-file statistics.

Computed from the metadata columns only (never `emb`, ~99% of the bytes). Each file's counts are
kept under its content hash and the published tables are sums over those parts, so after a
resync only the new files are scanned. NULLs are real buckets everywhere: a row with a NULL
`class` and a known `order` is counted under (..., NULL, order, ...), never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived import (
    read_part,
    read_parts,
    split_by_file,
    stale_files,
    write_part,
    write_table,
)
from tol_dagster.layout import Layout
from tol_dagster.mirror_files import MirrorFile
from tol_dagster.schema import RANKS, SORT_KEY, quote_ident
from tol_dagster.sorted_runs import changes, concat_sorted, sort_by, sum_runs

#: Published tables, in the order of their asset keys `tol/<config>/summary/<name>`.
SUMMARY_NAMES: tuple[str, ...] = (
    "lineage",
    "rank_counts",
    "img_type",
    "basis_of_record",
    "publisher",
    "files",
)

#: Value-count tables and the column each counts.
VALUE_COLUMNS: dict[str, str] = {
    "img_type": "img_type",
    "basis_of_record": "basisOfRecord",
    "publisher": "publisher",
}

#: Per-file results under the file's derived folder (bump the suffix when their meaning changes).
LINEAGE_PART = "summary_lineage.v1.arrow"
VALUES_PART = "summary_values.v1.arrow"
STATS_PART = "summary_file.v1.arrow"
PARTS = (LINEAGE_PART, VALUES_PART, STATS_PART)

_LINEAGE = ("source_dataset", *RANKS)
_STRING = pa.string()
_IMAGES = pa.field("images", pa.int64())
_KEY_TYPE = pa.struct([pa.field(name, _STRING) for name in SORT_KEY])

_LINEAGE_SCHEMA = pa.schema([*(pa.field(n, _STRING) for n in _LINEAGE), _IMAGES])
_VALUES_SCHEMA = pa.schema(
    [
        pa.field("part", _STRING),
        pa.field("source_dataset", _STRING),
        pa.field("value", _STRING),
        _IMAGES,
    ]
)
_STATS_SCHEMA = pa.schema(
    [
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("row_groups", pa.int32()),
        pa.field("first_key", _KEY_TYPE),
        pa.field("last_key", _KEY_TYPE),
    ]
)

#: The published schema of every summary table.
SCHEMAS: dict[str, pa.Schema] = {
    "lineage": _LINEAGE_SCHEMA,
    "rank_counts": pa.schema([pa.field("rank", _STRING), *_LINEAGE_SCHEMA]),
    **{name: _VALUES_SCHEMA.remove(0) for name in VALUE_COLUMNS},
    "files": pa.schema([pa.field("file", _STRING), pa.field("sha256", _STRING), *_STATS_SCHEMA]),
}


@dataclass(frozen=True)
class SummaryResult:
    """What a build did: the files it (re)scanned and the tables it published."""

    recomputed: tuple[str, ...]
    rows: dict[str, int]
    paths: dict[str, Path]


def summary_path(layout: Layout, config: str, name: str) -> Path:
    """The published file of summary `name`."""
    if name not in SUMMARY_NAMES:
        raise ValueError(f"unknown summary {name!r}; expected one of {', '.join(SUMMARY_NAMES)}")
    return layout.summary_dir(config) / f"{name}.parquet"


def build_summaries(
    files: Sequence[MirrorFile], layout: Layout, config: str, *, force: bool = False
) -> SummaryResult:
    """Scan the files not summarised yet (all when `force`), then publish every summary table.

    `files` is the whole mirror in its order; `force` recomputes every file's part (a rebuild
    from scratch, as the bench measures it).
    """
    stale = stale_files(files, layout, config, PARTS, force=force)
    if stale:
        with duck.cursor() as con:
            _write_counts(con, stale, layout, config)
            _write_stats(con, stale, layout, config)
    tables = _combine(files, layout, config)
    paths = {name: summary_path(layout, config, name) for name in tables}
    # Writing is most of a small update's cost, and pyarrow writes without the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write_table, tables.values(), paths.values()))
    return SummaryResult(
        recomputed=tuple(f.name for f in stale),
        rows={name: table.num_rows for name, table in tables.items()},
        paths=paths,
    )


def read_summary(layout: Layout, config: str, name: str) -> pa.Table:
    """A published summary table; FileNotFoundError says which asset to materialize."""
    path = summary_path(layout, config, name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: summary {name!r} of {config} is not built yet; "
            f"materialize tol/{config}/summary/{name}"
        )
    return pq.read_table(path)


def _write_counts(
    con: duckdb.DuckDBPyConnection, files: Sequence[MirrorFile], layout: Layout, config: str
) -> None:
    """Count lineages and values of all `files` in one scan (grouping sets), then keep each
    file's lineage counts (sorted, for a merge without a sort) and value counts."""
    ranks = ", ".join(quote_ident(r) for r in RANKS)
    values = {name: quote_ident(col) for name, col in VALUE_COLUMNS.items()}
    part = " ".join(f"WHEN GROUPING({col}) = 0 THEN '{name}'" for name, col in values.items())
    value = " ".join(f"WHEN GROUPING({col}) = 0 THEN {col}" for col in values.values())
    sets = ", ".join(
        [f"(filename, source_dataset, {ranks})"]
        + [f"(filename, source_dataset, {col})" for col in values.values()]
    )
    counts = con.sql(
        f"""
        SELECT filename, CASE {part} ELSE 'lineage' END AS part, source_dataset, {ranks},
               CASE {value} END AS value, count(*) AS images
        FROM read_parquet(?, filename = true)
        GROUP BY GROUPING SETS ({sets})
        """,
        params=[[str(f.path) for f in files]],
    ).to_arrow_table()
    is_lineage = pc.equal(counts["part"], "lineage")
    lineage = split_by_file(
        counts.filter(is_lineage).select(["filename", *_LINEAGE, "images"]), files
    )
    values_ = split_by_file(
        counts.filter(pc.invert(is_lineage)).select(["filename", *_VALUES_SCHEMA.names]), files
    )
    for (file, rows), (_, value_rows) in zip(lineage, values_, strict=True):
        write_part(
            sort_by(rows.cast(_LINEAGE_SCHEMA), _LINEAGE), layout, config, file, LINEAGE_PART
        )
        write_part(value_rows.cast(_VALUES_SCHEMA), layout, config, file, VALUES_PART)


def _write_stats(
    con: duckdb.DuckDBPyConnection, files: Sequence[MirrorFile], layout: Layout, config: str
) -> None:
    """Keep rows, bytes, row groups and first/last sort key of each file.

    The keys come from a row-number filter, which DuckDB answers from two row groups per file.
    """
    metas = [pq.read_metadata(f.path) for f in files]
    ends = [(f, m.num_rows - 1) for f, m in zip(files, metas, strict=True) if m.num_rows]
    where = " OR ".join("(filename = ? AND file_row_number IN (0, ?))" for _ in ends) or "false"
    keys = con.sql(
        f"""
        SELECT filename, struct_pack({", ".join(quote_ident(c) for c in SORT_KEY)}) AS key
        FROM read_parquet(?, filename = true, file_row_number = true)
        WHERE {where}
        ORDER BY filename, file_row_number
        """,
        params=[[str(f.path) for f in files], *(v for f, end in ends for v in (str(f.path), end))],
    ).to_arrow_table()
    for (file, rows), meta in zip(split_by_file(keys, files), metas, strict=True):
        first_last = rows["key"].to_pylist() or [None]
        stats = pa.table(
            {
                "rows": [meta.num_rows],
                "bytes": [file.path.stat().st_size],
                "row_groups": [meta.num_row_groups],
                "first_key": [first_last[0]],
                "last_key": [first_last[-1]],
            },
            schema=_STATS_SCHEMA,
        )
        write_part(stats, layout, config, file, STATS_PART)


def _combine(files: Sequence[MirrorFile], layout: Layout, config: str) -> dict[str, pa.Table]:
    """Sum the per-file parts into the published tables.

    Each file's lineage counts are sorted and the files are in the mirror's order, so their
    concatenation is sorted too and summing is collapsing runs: no hashing, no sort.
    """
    parts = [read_part(layout, config, f, LINEAGE_PART) for f in files]
    lineage = sum_runs(concat_sorted(parts, _LINEAGE, _LINEAGE_SCHEMA), _LINEAGE, ["images"])
    values = read_parts(files, layout, config, VALUES_PART, _VALUES_SCHEMA)
    values = sum_runs(
        sort_by(values, _VALUES_SCHEMA.names[:3]), _VALUES_SCHEMA.names[:3], ["images"]
    )
    tables = {"lineage": lineage, "rank_counts": _rank_counts(lineage)}
    for name in VALUE_COLUMNS:
        tables[name] = values.filter(pc.equal(values["part"], name)).drop_columns(["part"])
    stats = read_parts(files, layout, config, STATS_PART, _STATS_SCHEMA)
    tables["files"] = pa.Table.from_arrays(
        [pa.array([f.name for f in files]), pa.array([f.sha256 for f in files]), *stats.columns],
        schema=SCHEMAS["files"],
    )
    return {name: tables[name].cast(SCHEMAS[name]) for name in SUMMARY_NAMES}


def _rank_counts(lineage: pa.Table) -> pa.Table:
    """Counts at every rank, rolled up from the sorted lineage table: at each rank a group is a
    run of rows sharing the source and the ranks down to it.

    NULL equals NULL in a run, so a hole above the rank stays its own bucket; the `rank` column
    tells a hole (NULL at or above `rank`) from truncation (NULL below it).
    """
    images = lineage["images"].to_numpy()
    changed = changes(lineage["source_dataset"])
    tables = []
    for depth, rank in enumerate(RANKS):
        changed |= changes(lineage[rank])
        starts = np.flatnonzero(changed)
        rows = lineage.take(starts)
        kept = _LINEAGE[: depth + 2]
        columns = {c: rows[c] if c in kept else pa.nulls(len(starts), _STRING) for c in _LINEAGE}
        tables.append(
            pa.table(
                {
                    "rank": pa.repeat(rank, len(starts)),
                    **columns,
                    "images": np.add.reduceat(images, starts),
                },
                schema=SCHEMAS["rank_counts"],
            )
        )
    return pa.concat_tables(tables)

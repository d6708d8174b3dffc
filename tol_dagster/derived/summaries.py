"""Summary tables of a config's mirror: image counts per lineage, rank, image type, record
basis and publisher, and per-file statistics.

Computed from the metadata columns only (never `emb`, ~99% of the bytes). Each file's counts are
kept under its content hash and the published tables are sums over those parts, so after a
resync only the new files are scanned. NULLs are real buckets everywhere: a row with a NULL
`class` and a known `order` is counted under (..., NULL, order, ...), never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.parts import (
    publish_table,
    read_part,
    read_published,
    split_by_file,
    stale_files,
    write_part,
)
from tol_dagster.derived.sorted_runs import changes, concat_sorted, sort_by, sum_runs
from tol_dagster.schema import RANKS, SORT_KEY, quote_ident
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

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

#: Each file's part under its derived folder (bump the suffix when its meaning changes): its
#: lineage counts (sorted, `part` = "lineage"), then its value counts (`part` = a VALUE_COLUMNS
#: name), with the file's statistics in the schema metadata. One file, not three: on a busy
#: disk each small write and rename costs milliseconds.
SUMMARY_PART = "summary.v1.arrow"

#: These tables are small (one row group): statistics serve no reader, and snappy writes a
#: third faster than zstd for ~25% more bytes; writing is most of an incremental update.
_WRITER_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": False}

_LINEAGE = ("source_dataset", *RANKS)
_STRING = pa.string()
_IMAGES = pa.field("images", pa.int64())
_KEY_TYPE = pa.struct([pa.field(name, _STRING) for name in SORT_KEY])

_LINEAGE_SCHEMA = pa.schema([*(pa.field(n, _STRING) for n in _LINEAGE), _IMAGES])
_VALUE_KEYS = ("part", "source_dataset", "value")
_PART_SCHEMA = pa.schema(
    [
        pa.field("part", _STRING),
        *_LINEAGE_SCHEMA.remove(len(_LINEAGE)),
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
    **{
        name: pa.schema([pa.field("source_dataset", _STRING), pa.field("value", _STRING), _IMAGES])
        for name in VALUE_COLUMNS
    },
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
    recomputed = write_parts(files, layout, config, force=force)
    tables = _combine(files, layout, config)
    paths = {name: summary_path(layout, config, name) for name in tables}
    # Writing is most of a small update's cost, and pyarrow writes without the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(partial(publish_table, **_WRITER_OPTIONS), tables.values(), paths.values()))
    return SummaryResult(
        recomputed=recomputed,
        rows={name: table.num_rows for name, table in tables.items()},
        paths=paths,
    )


def write_parts(
    files: Sequence[MirrorFile], layout: Layout, config: str, *, force: bool = False
) -> tuple[str, ...]:
    """Scan the files of `files` not summarised yet (all when `force`) and keep each one's
    part; the names of those scanned. Any subset of the mirror, in any step: parts are per file."""
    stale = stale_files(files, layout, config, SUMMARY_PART, force=force)
    if stale:
        with duck.cursor() as con:
            counts = _counts(con, stale)
            stats = _stats(con, stale)
        for (file, rows), file_stats in zip(counts, stats, strict=True):
            write_part(_part(rows, file_stats), layout, config, file, SUMMARY_PART)
    return tuple(f.name for f in stale)


def read_summary(layout: Layout, config: str, name: str) -> pa.Table:
    """A published summary table."""
    return read_published(summary_path(layout, config, name), f"tol/{config}/summary/{name}")


def _counts(
    con: duckdb.DuckDBPyConnection, files: Sequence[MirrorFile]
) -> list[tuple[MirrorFile, pa.Table]]:
    """Each file's lineage and value counts, from one scan of all `files` (grouping sets)."""
    ranks = ", ".join(quote_ident(r) for r in RANKS)
    values = {name: quote_ident(col) for name, col in VALUE_COLUMNS.items()}
    part = " ".join(f"WHEN GROUPING({col}) = 0 THEN '{name}'" for name, col in values.items())
    value = " ".join(f"WHEN GROUPING({col}) = 0 THEN {col}" for col in values.values())
    sets = ", ".join(
        [f"(file_index, source_dataset, {ranks})"]
        + [f"(file_index, source_dataset, {col})" for col in values.values()]
    )
    # Sorted here so that each file's part is ready: its lineage rows first, in lineage order.
    counts = con.sql(
        f"""
        SELECT file_index, CASE {part} ELSE 'lineage' END AS part, source_dataset, {ranks},
               CASE {value} END AS value, count(*) AS images
        FROM read_parquet(?)
        GROUP BY GROUPING SETS ({sets})
        ORDER BY file_index, part <> 'lineage', source_dataset, {ranks}, part, value
        """,
        params=[[str(f.path) for f in files]],
    ).to_arrow_table()
    return split_by_file(counts, files)


def _stats(con: duckdb.DuckDBPyConnection, files: Sequence[MirrorFile]) -> list[dict[str, Any]]:
    """Rows, bytes, row groups and first/last sort key of each file.

    The keys come from a row-number filter, which DuckDB answers from two row groups per file.
    """
    metas = [pq.read_metadata(f.path) for f in files]
    ends = [(i, m.num_rows - 1) for i, m in enumerate(metas) if m.num_rows]
    where = " OR ".join("(file_index = ? AND file_row_number IN (0, ?))" for _ in ends) or "false"
    keys = con.sql(
        f"""
        SELECT file_index, struct_pack({", ".join(quote_ident(c) for c in SORT_KEY)}) AS key
        FROM read_parquet(?, file_row_number = true)
        WHERE {where}
        ORDER BY file_index, file_row_number
        """,
        params=[[str(f.path) for f in files], *(v for i, end in ends for v in (i, end))],
    ).to_arrow_table()
    stats = []
    for (file, rows), meta in zip(split_by_file(keys, files), metas, strict=True):
        first_last = rows["key"].to_pylist() or [None]
        stats.append(
            {
                "rows": meta.num_rows,
                "bytes": file.path.stat().st_size,
                "row_groups": meta.num_row_groups,
                "first_key": first_last[0],
                "last_key": first_last[-1],
            }
        )
    return stats


def _part(counts: pa.Table, stats: dict[str, Any]) -> pa.Table:
    """One file's part (sorted lineage rows, then value rows), statistics in the metadata."""
    lineage_rows = pc.sum(pc.equal(counts["part"], "lineage")).as_py() or 0
    return counts.cast(_PART_SCHEMA).replace_schema_metadata(
        {"lineage_rows": str(lineage_rows), "file_stats": json.dumps(stats)}
    )


def _combine(files: Sequence[MirrorFile], layout: Layout, config: str) -> dict[str, pa.Table]:
    """Sum the per-file parts into the published tables.

    Each file's lineage counts are sorted and the files are in the mirror's order, so their
    concatenation is sorted too and summing is collapsing runs: no hashing, no sort.
    """
    parts = [read_part(layout, config, f, SUMMARY_PART) for f in files]
    metadata = [part.schema.metadata for part in parts]
    splits = [int(m[b"lineage_rows"]) for m in metadata]
    lineage = concat_sorted(
        [p.slice(0, n).select(_LINEAGE_SCHEMA.names) for p, n in zip(parts, splits, strict=True)],
        _LINEAGE,
        _LINEAGE_SCHEMA,
    )
    by_rank = _by_rank(lineage)
    values = [p.slice(n).cast(_PART_SCHEMA) for p, n in zip(parts, splits, strict=True)]
    values = pa.concat_tables(values) if values else _PART_SCHEMA.empty_table()
    values = sum_runs(sort_by(values, _VALUE_KEYS), _VALUE_KEYS, ["images"])
    tables = {
        "lineage": by_rank[-1].drop_columns(["rank"]),
        "rank_counts": pa.concat_tables(by_rank),
    }
    for name in VALUE_COLUMNS:
        tables[name] = values.filter(pc.equal(values["part"], name)).drop_columns(["part"])
    stats = [json.loads(m[b"file_stats"]) for m in metadata]
    tables["files"] = pa.Table.from_pylist(
        [{"file": f.name, "sha256": f.sha256, **s} for f, s in zip(files, stats, strict=True)],
        schema=SCHEMAS["files"],
    )
    return {name: tables[name].cast(SCHEMAS[name]) for name in SUMMARY_NAMES}


def _by_rank(lineage: pa.Table) -> list[pa.Table]:
    """Counts at each rank from sorted lineage rows (rank_counts rows, kingdom to species).

    At a rank, a group is a run of rows sharing the source and the ranks down to it, so one
    pass of neighbour comparisons serves every rank; at `species` the groups are the full
    lineages. NULL equals NULL in a run, so a hole above the rank stays its own bucket; the
    `rank` column tells a hole (NULL at or above `rank`) from truncation (NULL below it).
    """
    images = lineage["images"].to_numpy()
    changed = changes(lineage["source_dataset"])
    tables = []
    for depth, rank in enumerate(RANKS):
        changed |= changes(lineage[rank])
        starts = np.flatnonzero(changed)
        kept = _LINEAGE[: depth + 2]
        rows = lineage.select(kept)
        if len(starts) < lineage.num_rows:  # at `species` only rows at file seams repeat, if any
            rows = rows.take(starts)
        columns = {
            "rank": pa.repeat(rank, len(starts)),
            **dict(zip(kept, rows.columns, strict=True)),
        }
        columns |= {c: pa.nulls(len(starts), _STRING) for c in _LINEAGE[depth + 2 :]}
        columns["images"] = np.add.reduceat(images, starts)
        tables.append(pa.table(columns, schema=SCHEMAS["rank_counts"]))
    return tables

"""Summary tables of a config's mirror: image counts per lineage, rank, image type, record
basis and publisher, and per-file statistics.

Computed from the metadata columns only (never `emb`, ~99% of the bytes). Each file's counts are
kept under its content hash and the published tables are sums over those parts, so after a
resync only the new files are scanned; `lineage` and `rank_counts` are published in segments
of files (`rank_counts`), so only the segments a change reaches are encoded again. NULLs are
real buckets everywhere: a row with a NULL `class` and a known `order` is counted under (...,
NULL, order, ...), never dropped.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived import rank_counts, summary_facts
from tol_dagster.derived.parts import (
    files_to_compute,
    part_crcs,
    publish_segments,
    publish_table,
    read_part,
    read_published,
    split_by_file,
    write_part,
)
from tol_dagster.derived.rank_counts import (
    IMAGES,
    LINEAGE,
    LINEAGE_SCHEMA,
    PART_SCHEMA,
    RANK_COUNTS_SCHEMA,
    STRING,
    Part,
    by_rank,
)
from tol_dagster.derived.sorted_runs import sort_by
from tol_dagster.derived.table_records import record_table
from tol_dagster.schema import RANKS, SORT_KEY, quote_ident
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.thread_pools import shared_pool

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
#: groups at each rank, kingdom to species (`part` = the rank; each rank's rows sorted, their
#: counts in the metadata's `level_rows`), then its value counts (`part` = a VALUE_COLUMNS
#: name), with the file's statistics in the metadata. One file, not three: on a busy disk
#: each small write and rename costs milliseconds.
SUMMARY_PART = "summary.v3.arrow"

#: The layouts of the segmented tables (`lineage`, `rank_counts`): bump with SUMMARY_PART's
#: meaning (v3 only added its crc32) or the writer options, so that no segment of an older
#: meaning is copied.
_SEGMENTED = {"lineage": "summary.lineage.v2", "rank_counts": "summary.rank_counts.v2"}

#: These tables are small: statistics serve no reader, and snappy writes a third faster than
#: zstd for ~25% more bytes.
_WRITER_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": False}

_KEY_TYPE = pa.struct([pa.field(name, STRING) for name in SORT_KEY])
_VALUE_KEYS = ("part", "source_dataset", "value")
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
    "lineage": LINEAGE_SCHEMA,
    "rank_counts": RANK_COUNTS_SCHEMA,
    **{
        name: pa.schema([pa.field("source_dataset", STRING), pa.field("value", STRING), IMAGES])
        for name in VALUE_COLUMNS
    },
    "files": pa.schema([pa.field("file", STRING), pa.field("sha256", STRING), *_STATS_SCHEMA]),
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

    `files` is the whole mirror in its order; `force` recomputes every file's part and encodes
    every table whole (a rebuild from scratch, as the bench measures it). Otherwise `lineage`
    and `rank_counts` copy the segments of unchanged files from the tables they replace.
    """
    recomputed = write_parts(files, layout, config, force=force)
    read = functools.cache(partial(_read_part, layout, config))  # facts, then segments
    crcs = part_crcs(files, layout, config, SUMMARY_PART)
    facts, values = summary_facts.load(files, crcs, layout, config, read, force=force)
    tables = rank_counts.segments(files, [f.groups for f in facts], read, crcs, _SEGMENTED)
    small = _small_tables(files, facts, values)
    paths = {name: summary_path(layout, config, name) for name in SUMMARY_NAMES}
    publish: dict[str, Callable[[], Any]] = {
        **{
            name: partial(
                publish_segments,
                tables[name],
                paths[name],
                SCHEMAS[name],
                layout=_SEGMENTED[name],
                reuse=not force,
                **_WRITER_OPTIONS,
            )
            for name in _SEGMENTED
        },
        **{
            name: partial(publish_table, table, paths[name], **_WRITER_OPTIONS)
            for name, table in small.items()
        },
    }

    def write(name: str) -> Any:
        written = publish[name]()
        record_table(layout, config, f"summary/{name}", paths[name])
        return written

    # Writing is most of a small update's cost, and pyarrow writes without the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(publish, pool.map(write, publish), strict=True))
    rows = {name: table.num_rows for name, table in small.items()}
    rows |= {name: done[name].rows for name in _SEGMENTED}
    return SummaryResult(
        recomputed=recomputed,
        rows={name: rows[name] for name in SUMMARY_NAMES},
        paths=paths,
    )


def write_parts(
    files: Sequence[MirrorFile], layout: Layout, config: str, *, force: bool = False
) -> tuple[str, ...]:
    """Scan the files of `files` not summarised yet (all when `force`) and keep each one's
    part; the names of those scanned. Any subset of the mirror, in any step: parts are per file."""
    stale = files_to_compute(files, layout, config, SUMMARY_PART, force=force)
    if stale:
        for file, lineage, values in _counts(stale):
            part = _part(lineage, values, _stats(file, lineage))
            write_part(part, layout, config, file, SUMMARY_PART)
    return tuple(f.name for f in stale)


def read_summary(layout: Layout, config: str, name: str) -> pa.Table:
    """A published summary table."""
    return read_published(summary_path(layout, config, name), f"tol/{config}/summary/{name}")


def _counts(files: Sequence[MirrorFile]) -> list[tuple[MirrorFile, pa.Table, pa.Table]]:
    """Each file's lineage counts (in lineage order) and value counts, from two scans of
    `files` at once: DuckDB scans a row group on one thread, so a one-file update's one query
    left a core idle (9.7 -> 6.8 ms for one file of 50,000 rows)."""
    paths = [str(f.path) for f in files]
    values = shared_pool("summary-counts", 1).submit(_query, _VALUES_SQL, paths)
    lineage = split_by_file(_query(_LINEAGE_SQL, paths), files)
    return [
        (file, rows, value_rows)
        for (file, rows), (_, value_rows) in zip(
            lineage, split_by_file(values.result(), files), strict=True
        )
    ]


def _query(sql: str, paths: list[str]) -> pa.Table:
    with duck.cursor() as con:
        return con.sql(sql, params=[paths]).to_arrow_table()


def _counts_sql() -> tuple[str, str]:
    """The queries of `_counts`: the lineage counts in lineage order, and the value counts
    as a part holds them (its ranks NULL), by source, table and value."""
    ranks = ", ".join(quote_ident(r) for r in RANKS)
    values = {name: quote_ident(col) for name, col in VALUE_COLUMNS.items()}
    part = " ".join(f"WHEN GROUPING({col}) = 0 THEN '{name}'" for name, col in values.items())
    value = " ".join(f"WHEN GROUPING({col}) = 0 THEN {col}" for col in values.values())
    sets = ", ".join(f"(file_index, source_dataset, {col})" for col in values.values())
    no_ranks = ", ".join(f"NULL::VARCHAR AS {quote_ident(r)}" for r in RANKS)
    lineage = f"""
        SELECT file_index, source_dataset, {ranks}, count(*) AS images FROM read_parquet(?)
        GROUP BY ALL ORDER BY file_index, source_dataset, {ranks}
    """
    value_rows = f"""
        SELECT file_index, CASE {part} END AS part, source_dataset, {no_ranks},
               CASE {value} END AS value, count(*) AS images
        FROM read_parquet(?)
        GROUP BY GROUPING SETS ({sets})
        ORDER BY file_index, source_dataset, part, value
    """
    return lineage, value_rows


_LINEAGE_SQL, _VALUES_SQL = _counts_sql()


def _stats(file: MirrorFile, lineages: pa.Table) -> dict[str, Any]:
    """Rows, bytes, row groups and first/last sort key of `file`, from its footer, its sorted
    lineage counts (`lineages`) and its first and last `common_name`, the sort key's last
    column.

    A mirror file is sorted by the sort key (the gate proves it before publishing), so its
    first and last lineages are its first and last rows'. (A DuckDB row-number filter naming
    every file, used before, tested each row against two conditions per file: a first build
    of 666 files took minutes.)
    """
    reader = pq.ParquetFile(file.path)
    meta = reader.metadata
    keys: list[dict[str, Any] | None] = [None, None]
    if meta.num_rows and lineages.num_rows:
        names = _end_values(reader, "common_name")
        for end, row in enumerate([0, lineages.num_rows - 1]):
            key = {c: lineages[c][row].as_py() for c in LINEAGE}
            keys[end] = key | {"common_name": names[end]}
    return {
        "rows": meta.num_rows,
        "bytes": file.path.stat().st_size,
        "row_groups": meta.num_row_groups,
        "first_key": keys[0],
        "last_key": keys[1],
    }


def _end_values(reader: pq.ParquetFile, column: str) -> tuple[Any, Any]:
    """`column`'s values on the file's first and last rows, from that column of their row
    groups (one read when they are the same row group)."""
    meta = reader.metadata
    groups = [g for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
    first = reader.read_row_group(groups[0], columns=[column])[column]
    last = (
        first
        if groups[-1] == groups[0]
        else reader.read_row_group(groups[-1], columns=[column])[column]
    )
    return first[0].as_py(), last[len(last) - 1].as_py()


def _part(lineage: pa.Table, values: pa.Table, stats: dict[str, Any]) -> pa.Table:
    """One file's part: its groups at each rank (each rank's rows sorted), from its sorted
    `lineage` counts, then its value counts (`values`); the rows per rank and the file's
    statistics in the metadata."""
    levels = by_rank(lineage.cast(LINEAGE_SCHEMA))
    ranks = [
        level.rename_columns(["part", *LINEAGE_SCHEMA.names])
        .append_column("value", pa.nulls(level.num_rows, STRING))
        .select(PART_SCHEMA.names)
        for level in levels
    ]
    part = pa.concat_tables([*(r.cast(PART_SCHEMA) for r in ranks), values.cast(PART_SCHEMA)])
    return part.replace_schema_metadata(
        {
            "level_rows": json.dumps([level.num_rows for level in levels]),
            "file_stats": json.dumps(stats),
        }
    )


def _read_part(layout: Layout, config: str, file: MirrorFile) -> Part:
    recompute = partial(write_parts, [file], layout, config, force=True)
    return Part.of(read_part(layout, config, file, SUMMARY_PART, recompute))


def _small_tables(
    files: Sequence[MirrorFile], facts: Sequence[summary_facts.Facts], values: pa.Table
) -> dict[str, pa.Table]:
    """The value-count tables and `files`, summed over the files' value counts (`values`, one
    set per content: a content held by several files counts once per file) and written whole."""
    copies = Counter(f.sha256 for f in files)
    extra = [
        values.filter(pc.equal(values["sha256"], sha))
        for sha, count in copies.items()
        for _ in range(count - 1)
    ]
    values = pa.concat_tables([values, *extra]).drop_columns(["sha256"])
    # Hash the many rows into few groups, then sort those (NULL keys are groups too).
    values = values.group_by(list(_VALUE_KEYS), use_threads=False).aggregate([("images", "sum")])
    values = values.select([*_VALUE_KEYS, "images_sum"]).rename_columns([*_VALUE_KEYS, "images"])
    values = sort_by(values, _VALUE_KEYS)
    tables = {}
    for name in VALUE_COLUMNS:
        table = values.filter(pc.equal(values["part"], name)).drop_columns(["part"])
        tables[name] = table.select(SCHEMAS[name].names).cast(SCHEMAS[name])
    tables["files"] = pa.Table.from_pylist(
        [
            {"file": f.name, "sha256": f.sha256, **fact.stats}
            for f, fact in zip(files, facts, strict=True)
        ],
        schema=SCHEMAS["files"],
    )
    return tables

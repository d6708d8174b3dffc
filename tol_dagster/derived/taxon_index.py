"""The taxon index: (rank, value) -> the row groups, and the row range within each, that hold
the taxon, so a slice reads only those row groups and a count needs no scan.

The mirror is sorted by lineage, so a taxon sits in few row groups. One entry per (rank,
value, file, row group): `row_start`/`row_end` are the file-relative rows of the first match and
one past the last, `rows` the matches between them (a homonym or another source may sit in
between). For `species` the value is the binomial ("Danaus plexippus") whether the species
column holds the bare epithet (joined to the genus) or the binomial already; a row whose
epithet has no genus, or an empty one or one holding a space (upstream's dirt: a key splits a
binomial at its first space, so `Incertae sedis alpha` would name genus `Incertae`), has no
binomial and is not indexed under `species`. NULLs are not indexed: no slice key names them.

Entries are published in mirror order (by file, then rank, value and row group), in one
segment per group of files (`parts.file_groups`): an update encodes the segments of the
changed files and copies the others' bytes from the index it replaces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived import parts
from tol_dagster.derived.table_records import record_table
from tol_dagster.parquet.segmented import Segment
from tol_dagster.schema import SLICE_RANKS, quote_ident
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

#: Per-file part under the file's derived folder (bump the suffix when its meaning or its
#: container changes: v2 added the crc32, v3 left out binomials that do not split back).
INDEX_PART = "taxon_index.v3.arrow"

#: SQL for the binomial of a row: the species column if it holds one, else genus + epithet
#: where they split back at the first space (`keys.split_binomial`), else NULL.
BINOMIAL_SQL = (
    "CASE WHEN contains(species, ' ') THEN species "
    "WHEN genus <> '' AND species <> '' AND NOT contains(genus, ' ') "
    "THEN genus || ' ' || species END"
)

#: The published file's segments: one per group of mirror files (`parts.file_groups`); bump
#: when the entries' meaning or the writer options change, so no older segment is copied.
_LAYOUT = "taxon_index.v3"

#: Sorted values share prefixes and row numbers grow: delta encodings make the index ~20%
#: smaller than dictionaries would, and write faster.
_WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": ["rank", "file"],
    "column_encoding": {"value": "DELTA_BYTE_ARRAY"}
    | dict.fromkeys(["row_group", "row_start", "row_end", "rows"], "DELTA_BINARY_PACKED"),
}

_ENTRY_FIELDS = [
    pa.field("row_group", pa.int32()),
    pa.field("row_start", pa.int64()),
    pa.field("row_end", pa.int64()),
    pa.field("rows", pa.int64()),
]
_PART_SCHEMA = pa.schema(
    [pa.field("rank", pa.string()), pa.field("value", pa.string()), *_ENTRY_FIELDS]
)
#: The published index.
INDEX_SCHEMA = pa.schema(
    [
        pa.field("rank", pa.string()),
        pa.field("value", pa.string()),
        pa.field("file", pa.string()),
        *_ENTRY_FIELDS,
    ]
)


#: Entries up to which `lookup` compares values in Python: a value's own entries, as a rank
#: pass holds them, are a few, and four pyarrow compute calls cost more (0.1 against 0.4 ms).
SMALL_INDEX = 64


@dataclass(frozen=True)
class Entry:
    """Rows of one taxon in one row group: read row group `row_group` of `file`, keep matches."""

    file: str
    row_group: int
    row_start: int
    row_end: int
    rows: int


_ENTRY_COLUMNS = [field.name for field in dataclasses.fields(Entry)]


@dataclass(frozen=True)
class IndexResult:
    """What a build did: the files it (re)indexed and the index it published."""

    recomputed: tuple[str, ...]
    rows: int
    bytes: int
    path: Path


def build_taxon_index(
    files: Sequence[MirrorFile], layout: Layout, config: str, *, force: bool = False
) -> IndexResult:
    """Index the files not indexed yet (all when `force`), then publish the whole index: the
    segments of unchanged files copied from the index published before (unless `force`)."""
    recomputed = write_parts(files, layout, config, force=force)
    path = layout.taxon_index_path(config)
    crcs = parts.part_crcs(files, layout, config, INDEX_PART)
    written = parts.publish_segments(
        [
            Segment(
                parts.content_key(group, crcs),
                partial(_entries, group, layout, config),
            )
            for group in parts.file_groups(files)
        ],
        path,
        INDEX_SCHEMA,
        layout=_LAYOUT,
        reuse=not force,
        **_WRITER_OPTIONS,
    )
    record_table(layout, config, "taxon_index", path)
    return IndexResult(
        recomputed=recomputed,
        rows=written.rows,
        bytes=path.stat().st_size,
        path=path,
    )


def write_parts(
    files: Sequence[MirrorFile], layout: Layout, config: str, *, force: bool = False
) -> tuple[str, ...]:
    """Index the files of `files` not indexed yet (all when `force`), a part each; the names
    of those indexed. Any subset of the mirror, in any step: parts are per file."""
    stale = parts.files_to_compute(files, layout, config, INDEX_PART, force=force)
    if stale:
        for file, part in parts.split_by_file(_index_files(stale), stale):
            parts.write_part(part, layout, config, file, INDEX_PART)
    return tuple(f.name for f in stale)


def read_taxon_index(layout: Layout, config: str) -> pa.Table:
    """The published index."""
    return parts.read_published(layout.taxon_index_path(config), f"tol/{config}/taxon_index")


def lookup(index: pa.Table, rank: str, value: str) -> list[Entry]:
    """Every row group holding rows with `rank` = `value`, in the mirror's order."""
    if rank not in SLICE_RANKS:
        raise ValueError(f"unknown rank {rank!r}; expected one of {', '.join(SLICE_RANKS)}")
    if index.num_rows <= SMALL_INDEX:
        columns = index.select(["rank", "value", *_ENTRY_COLUMNS]).to_pydict().values()
        return [
            Entry(*row[2:])
            for row in zip(*columns, strict=True)
            if row[0] == rank and row[1] == value
        ]
    hits = index.filter(pc.and_(pc.equal(index["rank"], rank), pc.equal(index["value"], value)))
    return [Entry(**row) for row in hits.drop_columns(["rank", "value"]).to_pylist()]


def count(index: pa.Table, rank: str, value: str) -> int:
    """Rows with `rank` = `value` in the whole mirror, from the index alone."""
    return sum(entry.rows for entry in lookup(index, rank, value))


def _index_files(files: Sequence[MirrorFile]) -> pa.Table:
    """Index entries of `files` (with DuckDB's `file_index`) from one scan of their rank columns.

    Rows are first counted per full lineage and per block of rows that never straddles a row
    group, which shrinks the data before each block is placed in its row group and the counts
    are split by rank. When the blocks are the row groups (every row group but a file's last of
    one size, the last no larger: upstream's files), a block's number is its row group's and
    no join places it (~15% of a one-file update's query).
    """
    starts = _row_group_starts(files)
    # Blocks of `block` rows never straddle a row group: it divides every row group's start.
    block = math.gcd(*starts["start"].to_pylist()) or 1 << 62
    ranks = [quote_ident(r) for r in SLICE_RANKS if r != "species"]
    keys = ", ".join([*ranks, BINOMIAL_SQL])
    blocks = f"""
        SELECT file_index, min(file_row_number) AS first, max(file_row_number) AS last,
               count(*) AS n, {", ".join(ranks)}, {BINOMIAL_SQL} AS species,
               (file_row_number // {block})::INTEGER AS block
        FROM read_parquet(?, file_row_number = true)
        GROUP BY file_index, block, {keys}
    """
    direct = _blocks_are_row_groups(starts, block)
    if direct:
        placed = f"SELECT * RENAME (block AS row_group) FROM ({blocks})"
    else:
        placed = f"""
            SELECT blocks.* EXCLUDE (block), row_groups.row_group FROM ({blocks}) AS blocks
            ASOF JOIN row_groups
            ON blocks.file_index = row_groups.file_index AND blocks.first >= row_groups.start
        """
    with duck.cursor() as con:
        if not direct:  # the join's table (registering it alone costs ~0.5 ms)
            con.register("row_groups", starts)
        entries = con.sql(
            f"""
            WITH placed AS ({placed})
            SELECT file_index, rank, value, row_group, min(first) AS row_start,
                   max(last) + 1 AS row_end, sum(n) AS rows
            FROM (UNPIVOT placed ON {", ".join([*ranks, "species"])} INTO NAME rank VALUE value)
            GROUP BY ALL
            ORDER BY file_index, rank, value, row_group
            """,
            params=[[str(f.path) for f in files]],
        ).to_arrow_table()
    return entries.cast(pa.schema([pa.field("file_index", pa.int64()), *_PART_SCHEMA]))


def _row_group_starts(files: Sequence[MirrorFile]) -> pa.Table:
    """(file_index, row_group, start, rows) of every row group of `files`, from the footers."""
    rows: dict[str, list[int]] = {"file_index": [], "row_group": [], "start": [], "rows": []}
    for index, file in enumerate(files):
        meta = pq.read_metadata(file.path)
        start = 0
        for group in range(meta.num_row_groups):
            size = meta.row_group(group).num_rows
            for column, value in zip(rows, (index, group, start, size), strict=True):
                rows[column].append(value)
            start += size
    types = {
        "file_index": pa.int64(),
        "row_group": pa.int32(),
        "start": pa.int64(),
        "rows": pa.int64(),
    }
    return pa.table({column: pa.array(values, types[column]) for column, values in rows.items()})


def _blocks_are_row_groups(starts: pa.Table, block: int) -> bool:
    """Whether row `r` of each file lies in its row group `r // block`: every row group
    starts at its number times `block` and holds at most `block` rows."""
    columns = starts.select(["row_group", "start", "rows"]).to_pydict().values()
    return all(
        start == group * block and rows <= block
        for group, start, rows in zip(*columns, strict=True)
    )


def _entries(files: Sequence[MirrorFile], layout: Layout, config: str) -> pa.Table:
    """The entries of `files`, in mirror order: by file, then rank, value and row group."""
    tables = []
    for file in files:
        recompute = partial(write_parts, [file], layout, config, force=True)
        part = parts.read_part(layout, config, file, INDEX_PART, recompute)
        tables.append(part.add_column(2, "file", pa.repeat(file.name, part.num_rows)))
    return pa.concat_tables(tables).cast(INDEX_SCHEMA) if tables else INDEX_SCHEMA.empty_table()

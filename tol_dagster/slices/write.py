"""Writing a slice: the rows the reader hands over, encoded here (`emb` by `list_encode`, the
other columns by pyarrow), and the row groups to copy, spliced in as bytes between them, into
one parquet file with the mirror's schema. A range of a row group spliced page by page becomes
one row group: its copied pages with their re-encoded ends, and its other columns encoded here.

Writer settings for speed: ZSTD level 1 on the string columns (none in row groups of fewer
than MIN_COMPRESSED_ROWS rows), dictionary and statistics off for `emb`, and `emb` uncompressed
unless that makes it 10% or more bigger than ZSTD would (float16 embeddings barely compress:
~9% here; each file's first batch decides). Copied row groups keep the mirror's codec. A file
whose row groups cannot be spliced (another physical schema, an unusual layout) has them read
and filtered instead (`copyable_scans`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import StoreError
from tol_dagster.parquet import list_encode, list_table
from tol_dagster.parquet.footer import (
    Footer,
    SpliceError,
    read_footer,
)
from tol_dagster.parquet.page_splice import range_columns
from tol_dagster.parquet.splice import Column, Splicer
from tol_dagster.schema import METADATA_COLUMNS, STRING_COLUMNS
from tol_dagster.slices import read
from tol_dagster.slices.locate import Copy, Scan, Span, row_groups, scan_file
from tol_dagster.slices.sink import HashingSink

#: ZSTD level of every compressed column: level 3 costs more and saves little here.
ZSTD_LEVEL = 1
#: Row groups of fewer rows than this get their string columns uncompressed: ZSTD sets up
#: anew for every page (~20 us), which is more than writing 16 small columns costs, and their
#: bytes are a few percent of `emb`'s. A rank's slices are mostly such (a family is ~800 rows
#: in the bench's sample): 1.14 -> 0.40 ms a row group.
MIN_COMPRESSED_ROWS = 2_000
#: `emb` is written uncompressed when that makes it less than this much bigger than ZSTD would.
EMB_MIN_GAIN = 0.10
#: Bytes of the first batch's `emb` values tried with ZSTD to decide `emb`'s codec: 64 KiB
#: gave the same ratio as 4 MiB (+8.4% to +8.7% over the sample's row groups) for 1/50 of the cost.
_PROBE_BYTES = 64 * 1024
#: The parquet leaf of `emb` (pyarrow names a list's leaf `<column>.list.element`).
EMB_COLUMN = "emb"
EMB_LEAF = "emb.list.element"


def write_slice(items: Iterator[read.Item], sink: HashingSink, schema: pa.Schema) -> str:
    """Write the slice to `sink`; returns the codec of the first `emb` rows we encoded.

    The file is spliced as it streams: batches are encoded into row groups of about
    `read.BATCH_ROWS` rows (`emb` by `list_encode`, the other columns by pyarrow) and added to
    `sink` between the mirror's row groups copied in place. Always so, and each file's rows on
    their own: one way of writing, so a slice is the same bytes whether one pass, a rank pass
    or steps wrote it.
    """
    splicer = Splicer(sink, reference_footer(schema))
    mirror: dict[Path, Footer] = {}
    groups = _RowGroups(splicer, schema)
    current: Path | None = None
    first_codec: str | None = None  # of the first rows encoded here
    for file, item in items:
        if file.path != current:
            # A file's rows start a row group and a codec choice of their own: the bytes
            # are then the same wherever the files are cut into steps (`extract_segment`).
            groups.flush()
            groups.codec, current = None, file.path
        if isinstance(item, Copy):
            groups.flush()
            try:
                if file.path not in mirror:
                    mirror[file.path] = read_footer(file.path)
                splicer.add(mirror[file.path], item.row_group)
            except SpliceError as error:
                raise _damaged(error) from error
        elif isinstance(item, read.SplicedRange):
            groups.flush()
            splicer.add_columns(
                _range_columns(item, schema, groups.codec_for(item.rest)), item.rows
            )
        else:
            groups.add(item)
        first_codec = first_codec or groups.codec
    groups.flush()
    splicer.close()
    return first_codec or groups.codec or "none"


class _RowGroups:
    """Batches queued into row groups of ~`read.BATCH_ROWS` rows, each encoded
    (`encoded_columns`) and added to `splicer` as it fills; `emb`'s codec decided by the first
    rows encoded (`codec_for`) until `codec` is reset."""

    def __init__(self, splicer: Splicer, schema: pa.Schema) -> None:
        self.splicer, self.schema = splicer, schema
        self.codec: str | None = None
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue `batch`, adding a row group once `read.BATCH_ROWS` are queued."""
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= read.BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Add the queued rows as one row group (none without rows)."""
        if self.rows:
            table = pa.Table.from_batches(self.pending)
            columns = encoded_columns(table, self.schema, self.codec_for(table))
            self.splicer.add_columns(columns, table.num_rows)
        self.pending, self.rows = [], 0

    def codec_for(self, table: pa.Table) -> str:
        """`emb`'s codec for these rows: the one decided, else the one their first batch
        decides (`_emb_codec`), kept for the rows after."""
        if self.codec is None:
            self.codec = _emb_codec(table)
        return self.codec


def _range_columns(item: read.SplicedRange, schema: pa.Schema, codec: str | None) -> list[Column]:
    """The columns of a range spliced page by page: those not copied encoded here
    (`encoded_columns`: `emb` with `codec`, or as its first rows decide)."""
    rest = item.rest
    columns = encoded_columns(rest, schema, codec or _emb_codec(rest))
    return range_columns(item.plan, columns, rest.num_rows, item.ends)


def encoded_columns(table: pa.Table, schema: pa.Schema, codec: str) -> list[Column]:
    """The rows of `table` (some of `schema`'s columns, in its order) encoded as one row
    group's column chunks, for `Splicer.add_columns`: `emb` by `list_encode` when it can
    (with `codec`), the rest by pyarrow with our writer settings."""
    open_writer = functools.partial(_rows_writer, emb_codec=codec)
    return list_table.encoded_columns(
        table, schema, EMB_COLUMN, _emb_chunk(schema), codec, open_writer
    )


def _rows_writer(sink: Any, schema: pa.Schema, rows: int, emb_codec: str) -> pq.ParquetWriter:
    """Our writer for `rows` encoded rows: page indexes, string columns compressed only from
    MIN_COMPRESSED_ROWS rows."""
    strings = "zstd" if rows >= MIN_COMPRESSED_ROWS else "none"
    return _parquet_writer(sink, schema, emb_codec, page_index=True, strings=strings)


def _emb_codec(batch: pa.RecordBatch | pa.Table) -> str:
    """'zstd' if a sample of `emb`'s bytes is EMB_MIN_GAIN or more bigger raw than ZSTD'd."""
    if EMB_COLUMN not in batch.schema.names:
        return "none"
    emb = batch.column(EMB_COLUMN)
    if isinstance(emb, pa.ChunkedArray):  # its first batch decides: no copy of the others
        if not emb.num_chunks:
            return "none"
        emb = emb.chunk(0)
    # The batch's own values only: its buffer may be a larger one's (a slice of a read table).
    if emb.null_count:  # `flatten` leaves null lists out
        values = emb.flatten()
        first, count = values.offset, len(values)
    else:  # a range of the list's child: `flatten`, a compute call, costs ~8x more
        values, size = emb.values, emb.type.list_size
        first, count = values.offset + emb.offset * size, len(emb) * size
    width = values.type.byte_width
    own = values.buffers()[1][first * width :][: count * width]
    sample = own[:_PROBE_BYTES]
    compressed = pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(sample)
    grows = sample.size / max(compressed.size, 1) - 1
    return "zstd" if grows >= EMB_MIN_GAIN else "none"


def _parquet_writer(
    sink: Any, schema: pa.Schema, emb_codec: str, page_index: bool, strings: str = "zstd"
) -> pq.ParquetWriter:
    compression = {name: strings for name in schema.names if name != EMB_COLUMN}
    compression[EMB_LEAF] = emb_codec
    return pq.ParquetWriter(
        sink,
        schema,
        compression=compression,
        compression_level={c: ZSTD_LEVEL for c, codec in compression.items() if codec == "zstd"},
        use_dictionary=[name for name in schema.names if name in STRING_COLUMNS],
        write_statistics=[name for name in schema.names if name in METADATA_COLUMNS],
        write_page_index=page_index,
    )


def copyable_scans(scans: list[Scan], schema: pa.Schema) -> list[Scan]:
    """`scans`, reading instead of copying the row groups of files we cannot splice (their
    parquet schema is not what pyarrow writes for `schema`, or their layout is unusual)."""
    wanted = reference_footer(schema).schema
    result = []
    for scan in scans:
        copies = [p for p in scan.pieces if isinstance(p, Copy)]
        if copies:
            try:
                footer = read_footer(scan.file.path)
                ok = footer.schema == wanted and all(footer.byte_range(c.row_group) for c in copies)
            except SpliceError:
                ok = False
            if not ok:
                scan = _as_spans(scan)
        result.append(scan)
    return result


def reference_footer(schema: pa.Schema) -> Footer:
    """The footer our writer gives an empty file of `schema`: the template of spliced files
    (physical schema, the Arrow schema in its key-value metadata, the writer's name). Shared:
    read it, never change it (a rank pass asks twice per slice)."""
    return _reference_footer(schema.serialize().to_pybytes())


@functools.lru_cache(maxsize=8)
def _reference_footer(serialized: bytes) -> Footer:
    """By the schema's bytes: unlike `pa.Schema.__eq__`, they tell its metadata apart."""
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    return list_table.template_footer(schema, _reference_writer)


def _reference_writer(sink: Any, schema: pa.Schema, rows: int) -> pq.ParquetWriter:
    return _parquet_writer(sink, schema, "none", page_index=False)


def _emb_chunk(schema: pa.Schema) -> list_encode.ListChunk | None:
    """What `list_encode` needs to write `emb`'s column chunks (None without `emb`, or when it
    is not a list of floats). Shared: never change it."""
    if EMB_COLUMN not in schema.names:
        return None
    return _emb_chunk_of(schema.serialize().to_pybytes())


@functools.lru_cache(maxsize=8)
def _emb_chunk_of(serialized: bytes) -> list_encode.ListChunk | None:
    """`emb`'s schema elements as our pyarrow writer lays them out (`reference_footer`)."""
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    return list_table.list_chunk(schema, reference_footer(schema), EMB_COLUMN, ZSTD_LEVEL)


def _as_spans(scan: Scan) -> Scan:
    """`scan` with its copied row groups read and filtered instead."""
    starts = row_groups(scan.file.path)[0]
    spans = {}
    for piece in scan.pieces:
        if isinstance(piece, Copy):
            start = int(starts[piece.row_group])
            spans[piece.row_group] = Span(start, start + piece.rows, piece.rows)
        elif isinstance(piece, Span):  # (splices are planned later, on these scans)
            first = int(np.searchsorted(starts, piece.start, side="right")) - 1
            spans[first] = piece  # merged spans keep their first row group's place
    return scan_file(scan.file, spans, exact=False)


def _damaged(error: SpliceError) -> StoreError:
    return StoreError(f"{error}: the mirror file is damaged; sync the mirror again")

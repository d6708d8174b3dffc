"""Writing a slice: the rows the reader hands over, encoded by pyarrow, and the row groups to
copy, spliced in as bytes between them, into one parquet file with the mirror's schema. A
range of a row group spliced page by page becomes one row group: its copied pages with their
re-encoded ends, and its other columns encoded here.

Writer settings for speed: ZSTD level 1 on the string columns, dictionary and statistics off
for `emb`, and `emb` uncompressed unless that makes it 10% or more bigger than ZSTD would
(float16 embeddings barely compress: ~9% here; each file's first batch decides). Copied row groups
keep the mirror's codec. A file whose row groups cannot be spliced (another physical schema,
an unusual layout) has them read and filtered instead (`copyable_scans`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import StoreError
from tol_dagster.parquet.footer import Footer, SpliceError, parse_footer, read_footer
from tol_dagster.parquet.page_splice import range_columns
from tol_dagster.parquet.splice import Column, Splicer
from tol_dagster.schema import METADATA_COLUMNS, STRING_COLUMNS
from tol_dagster.slices import read
from tol_dagster.slices.locate import Copy, Scan, Span, row_groups, scan_file
from tol_dagster.slices.sink import HashingSink

#: Bytes of encoded rows held in memory before they are spliced into the output.
SEGMENT_BYTES = 64 * 1024 * 1024
#: ZSTD level of every compressed column: level 3 costs more and saves little here.
ZSTD_LEVEL = 1
#: `emb` is written uncompressed when that makes it less than this much bigger than ZSTD would.
EMB_MIN_GAIN = 0.10
#: Bytes of the first batch's `emb` values tried with ZSTD to decide `emb`'s codec.
_PROBE_BYTES = 4 * 1024 * 1024
#: The parquet leaf of `emb` (pyarrow names a list's leaf `<column>.list.element`).
EMB_COLUMN = "emb"
EMB_LEAF = "emb.list.element"


def write_slice(items: Iterator[read.Item], sink: HashingSink, schema: pa.Schema) -> str:
    """Write the slice to `sink`; returns the codec of the first `emb` rows we encoded.

    The file is spliced as it streams: each run of batches between copied row groups is encoded
    by pyarrow into memory (a segment, at most SEGMENT_BYTES) and its row groups are copied into
    `sink` in place, between the mirror's. Always so, and each file's rows on their own: one way
    of writing, so a slice is the same bytes whether one pass, a rank pass or steps wrote it.
    """
    splicer = Splicer(sink, reference_footer(schema))
    mirror: dict[Path, Footer] = {}
    segment = _Segment(schema, codec=None)
    current: Path | None = None
    first_codec: list[str] = []  # of the first rows encoded here

    def drained(segment: _Segment) -> _Segment:
        fresh = segment.drain(splicer)
        if fresh is not segment and not first_codec and segment.writer.codec is not None:
            first_codec.append(segment.writer.codec)
        return fresh

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: segment.writer.abandon())
        for file, item in items:
            if file.path != current:
                # A file's rows start a row group and a codec choice of their own: the bytes
                # are then the same wherever the files are cut into steps (`extract_segment`).
                drained(segment)
                segment, current = _Segment(schema, codec=None), file.path
            if isinstance(item, Copy):
                segment = drained(segment)
                try:
                    if file.path not in mirror:
                        mirror[file.path] = read_footer(file.path)
                    splicer.add(mirror[file.path], item.row_group)
                except SpliceError as error:
                    raise _damaged(error) from error
            elif isinstance(item, read.SplicedRange):
                segment = drained(segment)
                splicer.add_columns(_range_columns(item, schema, segment.writer.codec), item.rows)
            else:
                segment.writer.add(item)
                if segment.size >= SEGMENT_BYTES:
                    segment = drained(segment)
        drained(segment)
    splicer.close()
    return first_codec[0] if first_codec else "none"


def _range_columns(item: read.SplicedRange, schema: pa.Schema, codec: str | None) -> list[Column]:
    """The columns of a range spliced page by page: those not copied encoded here with the
    writer's settings (`emb` with `codec`, or as its first rows decide)."""
    rest = item.rest
    buffer = pa.BufferOutputStream()
    if codec is None:
        codec = _emb_codec(rest.slice(0, read.BATCH_ROWS).combine_chunks().to_batches()[0])
    subset = pa.schema([schema.field(name) for name in rest.column_names])
    with _parquet_writer(buffer, subset, codec, page_index=True) as writer:
        writer.write_table(rest, row_group_size=rest.num_rows)
    data = buffer.getvalue()
    return range_columns(
        item.plan, parse_footer(memoryview(data), Path("<range>"), data), item.ends
    )


class _Segment:
    """Batches encoded by pyarrow into memory, until `drain` copies their row groups out."""

    def __init__(self, schema: pa.Schema, codec: str | None) -> None:
        self.schema = schema
        self.buffer = pa.BufferOutputStream()
        self.writer = _Writer(self.buffer, schema, page_index=True, codec=codec)

    @property
    def size(self) -> int:
        return int(self.buffer.tell())

    def drain(self, splicer: Splicer) -> _Segment:
        """Copy the row groups written so far into `splicer`; returns a fresh segment."""
        if self.writer.rows == 0 and not self.writer.pending:
            return self
        self.writer.close()
        data = self.buffer.getvalue()
        footer = parse_footer(memoryview(data), Path("<segment>"), data=data)
        for group in range(len(footer.row_groups)):
            splicer.add(footer, group)
        return _Segment(self.schema, self.writer.codec)


class _Writer:
    """pyarrow's writer in row groups of ~`read.BATCH_ROWS`, opened at the first batch (which
    decides `emb`'s codec unless given) or at close for a file without batches."""

    def __init__(
        self, sink: Any, schema: pa.Schema, *, page_index: bool, codec: str | None = None
    ) -> None:
        self.sink, self.schema, self.page_index = sink, schema, page_index
        self.writer: pq.ParquetWriter | None = None
        self.codec = codec
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue `batch`, writing a row group once `read.BATCH_ROWS` are queued."""
        self.pending.append(batch)
        if sum(b.num_rows for b in self.pending) >= read.BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the queued batches as one row group."""
        if not self.pending:
            return
        writer = self._open(self.pending[0])
        table = pa.Table.from_batches(self.pending)
        writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        self.pending = []

    def close(self) -> None:
        """Flush and finish the file."""
        self.flush()
        self._open(None).close()
        self.writer = None

    def abandon(self) -> None:
        """Close a writer left open by a failure, while its file is still open."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def _open(self, first: pa.RecordBatch | None) -> pq.ParquetWriter:
        if self.writer is None:
            if self.codec is None:
                self.codec = "none" if first is None else _emb_codec(first)
            self.writer = _parquet_writer(self.sink, self.schema, self.codec, self.page_index)
        return self.writer


def _emb_codec(batch: pa.RecordBatch) -> str:
    """'zstd' if a sample of `emb`'s bytes is EMB_MIN_GAIN or more bigger raw than ZSTD'd."""
    if EMB_COLUMN not in batch.schema.names:
        return "none"
    values = batch.column(EMB_COLUMN).flatten()
    width = values.type.byte_width
    # The batch's own values only: its buffer may be a larger one's (a slice of a read table).
    own = values.buffers()[1][values.offset * width :][: len(values) * width]
    sample = own[:_PROBE_BYTES]
    compressed = pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(sample)
    grows = sample.size / max(compressed.size, 1) - 1
    return "zstd" if grows >= EMB_MIN_GAIN else "none"


def _parquet_writer(
    sink: Any, schema: pa.Schema, emb_codec: str, page_index: bool
) -> pq.ParquetWriter:
    compression = {name: "zstd" for name in schema.names if name != EMB_COLUMN}
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
    writer = _Writer(pa.BufferOutputStream(), schema, page_index=False, codec="none")
    writer.close()
    data = writer.sink.getvalue()
    return parse_footer(memoryview(data), Path("<reference>"), data=data)


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

"""Splice a row range of a row group page by page: the data pages wholly inside the range are
copied as bytes, only the pages at its ends are decoded and encoded again (`plan_range`,
`encode_pages`, `range_columns`).

Why: a taxon covers the row groups at its two ends only partly, and decoding and re-encoding
their `emb` (~77 MB a 50k-row row group) was most of a family slice's cost. A data page needs
nothing but its bytes: page headers hold no file offsets, and what says where pages are (the
column metadata, the offset index) is rebuilt here.

A column is copied page by page only when nothing about it would be wrong for the range or
unreadable after: an offset index that fits its chunk, no dictionary page, no statistics nor
column index (they describe all the rows, and we would have to decode to rebuild them), a codec
pyarrow writes (the end pages are encoded with it), data pages of one version, and at least
one page wholly inside the range. Any other column of the range is decoded and encoded whole by
the caller (`RangePlan.reasons` says why); a damaged page index or page header raises
`SpliceError`, and the caller decodes the whole range instead.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import field_ids, list_encode
from tol_dagster.parquet.footer import (
    Footer,
    SpliceError,
    chunk_start,
    page_header,
    parse_footer,
    parse_struct,
    pread_struct,
    read_bytes,
)
from tol_dagster.parquet.pages import check_locations
from tol_dagster.parquet.splice import Column
from tol_dagster.parquet.thrift import I32, I64, LIST, STRUCT, Struct, write_struct

#: Parquet codecs (CompressionCodec) whose pages pyarrow writes, by pyarrow's name.
CODECS = {0: "none", 1: "snappy", 2: "gzip", 4: "brotli", 6: "zstd", 7: "lz4"}
_VERSIONS = {field_ids.DATA_PAGE: "1.0", field_ids.DATA_PAGE_V2: "2.0"}
#: The ZSTD level of end pages `list_encode` writes (pyarrow's default, as for the others).
END_ZSTD_LEVEL = 1


@dataclass(frozen=True)
class PageRun:
    """Data pages of one column chunk wholly inside a row range: bytes [offset, offset +
    length) of the file, holding the row group's rows [first_row, end_row), `values` values
    and `uncompressed` bytes decompressed (headers included); pages of type `version`."""

    offset: int
    length: int
    first_row: int
    end_row: int
    values: int
    uncompressed: int
    locations: tuple[Struct, ...]
    version: int


@dataclass(frozen=True)
class RangePlan:
    """How to splice rows [start, stop) of `row_group` of `footer`'s file: the pages to copy
    of each column (by position) copied page by page, and why each other column is not."""

    footer: Footer
    row_group: int
    start: int
    stop: int
    runs: dict[int, PageRun]
    reasons: dict[str, str]

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.footer.top_level_fields()]


@dataclass(frozen=True)
class Encoded:
    """Rows of one column encoded by pyarrow as data pages: their bytes, their offset index
    locations (offsets from the first page, rows from the first row), values, decompressed
    bytes (headers included) and encodings."""

    pages: bytes
    locations: tuple[Struct, ...]
    values: int
    uncompressed: int
    encodings: tuple[int, ...]


def plan_range(
    footer: Footer, row_group: int, start: int, stop: int, decoded: Collection[str] = ()
) -> RangePlan:
    """Which pages of each column of rows [start, stop) of `row_group` can be copied as bytes
    (never those of the `decoded` columns). SpliceError if the page index or a page header of
    a column we would copy from is damaged."""
    fields = footer.top_level_fields()
    group = footer.row_groups[row_group]
    rows = int(group.get(field_ids.RG_NUM_ROWS))
    if not 0 <= start < stop <= rows:
        raise ValueError(f"rows {start}..{stop} are not in a row group of {rows} rows")
    runs: dict[int, PageRun] = {}
    reasons: dict[str, str] = {}
    with open(footer.path, "rb") as handle:
        for position, ((name, _), chunk) in enumerate(
            zip(fields, group.get(field_ids.RG_COLUMNS)[1], strict=True)
        ):
            try:
                run = (
                    "a column the key filters on"
                    if name in decoded
                    else _page_run(footer.path, handle, chunk, start, stop, rows)
                )
            except (IndexError, KeyError, TypeError, AttributeError, struct.error) as error:
                raise SpliceError(f"{footer.path}: damaged page index ({error!r})") from error
            if isinstance(run, PageRun):
                runs[position] = run
            else:
                reasons[name] = run
    return RangePlan(footer, row_group, start, stop, runs, reasons)


def _refusal(chunk: Struct, meta: Struct) -> str | None:
    """Why this column chunk's pages cannot be copied for a range of its rows, if so."""
    if not chunk.has(field_ids.CC_OFFSET_INDEX):
        return "no offset index"
    if chunk.has(field_ids.CC_COLUMN_INDEX) or meta.has(field_ids.CM_STATISTICS):
        return "statistics of all its rows, which only decoding the range could rebuild"
    if meta.get(field_ids.CM_DICTIONARY_PAGE):
        return "a dictionary page"
    if meta.get(field_ids.CM_CODEC) not in CODECS:
        return f"a compression codec pyarrow does not write ({meta.get(field_ids.CM_CODEC)})"
    return None


def _page_run(
    path: Path, handle: BinaryIO, chunk: Struct, start: int, stop: int, rows: int
) -> PageRun | str:
    """The pages of `chunk` wholly inside rows [start, stop), or why none are copied."""
    meta = chunk.get(field_ids.CC_META)
    reason = _refusal(chunk, meta)
    if reason is not None:
        return reason
    index = pread_struct(
        handle, chunk.get(field_ids.CC_OFFSET_INDEX), chunk.get(field_ids.CC_OFFSET_INDEX_LENGTH)
    )
    locations = index.get(field_ids.PAGE_LOCATIONS)[1]
    check_locations(path, locations, meta, rows)
    if locations[0].get(field_ids.PAGE_OFFSET) != chunk_start(meta):
        return "a page before its first data page (a dictionary page)"
    firsts = [page.get(field_ids.PAGE_FIRST_ROW) for page in locations] + [rows]
    first = bisect.bisect_left(firsts, start)
    last = bisect.bisect_right(firsts, stop) - 2  # the last page ending at or before `stop`
    if first > last:
        return "no page lies wholly inside the rows"
    run = locations[first : last + 1]
    values, uncompressed, versions, v2_rows = _run_totals(path, handle, run)
    covered = firsts[last + 1] - firsts[first]
    if len(versions) != 1:
        return "data pages of both versions"
    if (v2_rows is not None and v2_rows != covered) or values < covered:
        raise SpliceError(
            f"{path}: pages {first}..{last} hold {values} values ({v2_rows} rows) where the "
            f"offset index says {covered} rows"
        )
    begin = run[0].get(field_ids.PAGE_OFFSET)
    end = run[-1].get(field_ids.PAGE_OFFSET) + run[-1].get(field_ids.PAGE_SIZE)
    return PageRun(
        begin, end - begin, firsts[first], firsts[last + 1], values, uncompressed,
        tuple(page.copy() for page in run), versions.pop(),
    )  # fmt: skip


def _run_totals(
    path: Path, handle: BinaryIO, run: Sequence[Struct]
) -> tuple[int, int, set[int], int | None]:
    """(values, decompressed bytes with headers, page types, rows if all are v2) of the data
    pages at `run`'s locations; each header must parse and fill its location exactly."""
    values = uncompressed = v2_rows = 0
    versions: set[int] = set()
    for page in run:
        offset, size = page.get(field_ids.PAGE_OFFSET), page.get(field_ids.PAGE_SIZE)
        header, length = page_header(path, handle, offset, size)
        kind = header.get(field_ids.HEADER_TYPE)
        if kind not in _VERSIONS or length + header.get(field_ids.HEADER_COMPRESSED) != size:
            raise SpliceError(
                f"{path}: the page at byte {offset} (type {kind}) does not fill its offset "
                f"index location ({size} bytes)"
            )
        versions.add(kind)
        payload = header.get(
            field_ids.HEADER_DATA_V1 if kind == field_ids.DATA_PAGE else field_ids.HEADER_DATA_V2
        )
        values += payload.get(field_ids.DATA_NUM_VALUES)
        v2_rows += payload.get(field_ids.DATA_V2_NUM_ROWS, 0)
        uncompressed += length + header.get(field_ids.HEADER_UNCOMPRESSED)
    return values, uncompressed, versions, v2_rows if versions == {field_ids.DATA_PAGE_V2} else None


def encode_pages(rows: pa.Array | pa.ChunkedArray, plan: RangePlan, column: int) -> Encoded:
    """`rows` of the plan's column `column` (its Arrow type) encoded as data pages that can
    sit beside its copied pages: same physical schema, codec and page version, no dictionary,
    no statistics. A regular list of floats (`emb`) by `list_encode`, anything else by
    pyarrow; SpliceError if pyarrow wrote anything else."""
    run = plan.runs[column]
    name, elements = plan.footer.top_level_fields()[column]
    meta = plan.footer.row_groups[plan.row_group].get(field_ids.RG_COLUMNS)[1][column]
    codec = meta.get(field_ids.CC_META).get(field_ids.CM_CODEC)
    if run.version == field_ids.DATA_PAGE:
        pages = list_encode.encode_list_pages(rows, elements, CODECS[codec], END_ZSTD_LEVEL)
        if pages is not None:  # `emb`: its levels and values written here, not by pyarrow
            return Encoded(
                b"".join(pages.parts), tuple(pages.locations), pages.values,
                pages.uncompressed, list_encode.ENCODINGS,
            )  # fmt: skip
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field(name, rows.type)])
    with pq.ParquetWriter(
        sink, schema, compression=CODECS[codec], use_dictionary=False, write_statistics=False,
        write_page_index=True, data_page_version=_VERSIONS[run.version], store_schema=False,
    ) as writer:  # fmt: skip
        writer.write_table(pa.table([rows], schema=schema), row_group_size=max(len(rows), 1))
    data = sink.getvalue()
    footer = parse_footer(memoryview(data), Path("<end pages>"), data=data)
    chunk = footer.row_groups[0].get(field_ids.RG_COLUMNS)[1][0]
    written = chunk.get(field_ids.CC_META)
    if (
        _wire(footer.top_level_fields()[0][1]) != _wire(elements)
        or written.get(field_ids.CM_CODEC) != codec
        or written.get(field_ids.CM_DICTIONARY_PAGE)
        or chunk.has(field_ids.CC_COLUMN_INDEX)
        or not chunk.has(field_ids.CC_OFFSET_INDEX)
    ):
        raise SpliceError(f"{plan.footer.path}: pyarrow encodes column {name} otherwise")
    begin, length = chunk_start(written), written.get(field_ids.CM_TOTAL_COMPRESSED)
    index = _offset_index(footer, chunk)
    return Encoded(
        read_bytes(footer, begin, length),
        tuple(_moved_location(page, -begin, 0) for page in index),
        written.get(field_ids.CM_NUM_VALUES),
        written.get(field_ids.CM_TOTAL_UNCOMPRESSED),
        tuple(written.get(field_ids.CM_ENCODINGS)[1]),
    )


def range_columns(
    plan: RangePlan,
    rest: Sequence[Column],
    rows: int,
    ends: dict[int, tuple[Encoded | None, Encoded | None]],
) -> list[Column]:
    """The columns of the plan's range, for `Splicer.add_columns`: those with a page run as
    their encoded first pages, the copied run and their encoded last pages (`ends`); the
    others from `rest`, the range's `rows` rows of just them, in order."""
    chunks = plan.footer.row_groups[plan.row_group].get(field_ids.RG_COLUMNS)[1]
    if rows != plan.rows or len(rest) + len(plan.runs) != len(chunks):
        raise SpliceError(f"{plan.footer.path}: the decoded columns hold other rows")
    rest_columns = iter(rest)
    columns = []
    for position, chunk in enumerate(chunks):
        if position in plan.runs:
            head, tail = ends[position]
            columns.append(_spliced_column(plan, chunk, plan.runs[position], head, tail))
        else:
            columns.append(next(rest_columns))
    return columns


def whole_columns(footer: Footer) -> list[Column]:
    """The column chunks of the one row group of `footer`'s file (read into memory), as they
    are, for `Splicer.add_columns`; `footer` is theirs after (parsed for this alone).
    SpliceError if the file holds another number of row groups."""
    if len(footer.row_groups) != 1:
        raise SpliceError(f"{footer.path}: {len(footer.row_groups)} row groups, not one")
    return [_whole_column(footer, c) for c in footer.row_groups[0].get(field_ids.RG_COLUMNS)[1]]


def _spliced_column(
    plan: RangePlan, chunk: Struct, run: PageRun, head: Encoded | None, tail: Encoded | None
) -> Column:
    """One column of a range: the encoded first pages, the copied run, the encoded last pages;
    its metadata the source's with totals, offsets and page index made for these pages."""
    column = Column([], chunk.copy(), None, None)
    locations: list[Struct] = []
    values = uncompressed = 0
    encodings = list(chunk.get(field_ids.CC_META).get(field_ids.CM_ENCODINGS)[1])
    for piece in (head, run, tail):
        if piece is None:
            continue
        size = column.size
        if isinstance(piece, PageRun):
            column.parts.append((plan.footer, piece.offset, piece.length))
            moved = [_moved_location(p, size - piece.offset, -plan.start) for p in piece.locations]
        else:
            column.parts.append(piece.pages)
            first_row = 0 if piece is head else run.end_row - plan.start
            moved = [_moved_location(p, size, first_row) for p in piece.locations]
            encodings += [e for e in piece.encodings if e not in encodings]
        locations += moved
        values += piece.values
        uncompressed += piece.uncompressed
    column.chunk.drop(*_INDEX_FIELDS)
    column.chunk.put(field_ids.CC_FILE_OFFSET, I64, 0)
    meta = column.chunk.get(field_ids.CC_META)
    meta.drop(*field_ids.CM_OF_ALL_ROWS, field_ids.CM_DICTIONARY_PAGE)
    meta.set(field_ids.CM_ENCODINGS, (meta.get(field_ids.CM_ENCODINGS)[0], encodings))
    meta.set(field_ids.CM_NUM_VALUES, values)
    meta.set(field_ids.CM_TOTAL_UNCOMPRESSED, uncompressed)
    meta.set(field_ids.CM_TOTAL_COMPRESSED, column.size)
    meta.set(field_ids.CM_DATA_PAGE, 0)
    return Column(
        column.parts,
        column.chunk,
        Struct([[field_ids.PAGE_LOCATIONS, LIST, (STRUCT, locations)]]),
        None,
    )


_INDEX_FIELDS = (
    field_ids.CC_OFFSET_INDEX,
    field_ids.CC_OFFSET_INDEX_LENGTH,
    field_ids.CC_COLUMN_INDEX,
    field_ids.CC_COLUMN_INDEX_LENGTH,
)


def _whole_column(rest: Footer, chunk: Struct) -> Column:
    """A column chunk of `rest` as it is, its offsets made relative to its first byte (in
    place: `rest` was parsed for this alone)."""
    meta = chunk.get(field_ids.CC_META)
    begin, length = chunk_start(meta), meta.get(field_ids.CM_TOTAL_COMPRESSED)
    index = None
    if chunk.has(field_ids.CC_OFFSET_INDEX):
        pages = _offset_index(rest, chunk)
        for page in pages:
            page.set(field_ids.PAGE_OFFSET, page.get(field_ids.PAGE_OFFSET) - begin)
        index = Struct([[field_ids.PAGE_LOCATIONS, LIST, (STRUCT, pages)]])
    column_index = (
        read_bytes(
            rest, chunk.get(field_ids.CC_COLUMN_INDEX), chunk.get(field_ids.CC_COLUMN_INDEX_LENGTH)
        )
        if chunk.has(field_ids.CC_COLUMN_INDEX)
        else None
    )
    chunk.drop(*_INDEX_FIELDS)
    meta = chunk.get(field_ids.CC_META)
    for field_id in (field_ids.CM_DICTIONARY_PAGE, field_ids.CM_INDEX_PAGE):
        if not meta.get(field_id):  # absent, or 0 for "none": present means a page here
            meta.drop(field_id)
    for field_id in (field_ids.CM_DATA_PAGE, field_ids.CM_DICTIONARY_PAGE, field_ids.CM_INDEX_PAGE):
        if meta.has(field_id):
            meta.set(field_id, meta.get(field_id) - begin)
    if chunk.has(field_ids.CC_FILE_OFFSET):
        chunk.set(field_ids.CC_FILE_OFFSET, chunk.get(field_ids.CC_FILE_OFFSET) - begin)
    return Column([read_bytes(rest, begin, length)], chunk, index, column_index)


def _offset_index(footer: Footer, chunk: Struct) -> list[Struct]:
    blob = read_bytes(
        footer, chunk.get(field_ids.CC_OFFSET_INDEX), chunk.get(field_ids.CC_OFFSET_INDEX_LENGTH)
    )
    return list(parse_struct(memoryview(blob), 0, footer.path)[0].get(field_ids.PAGE_LOCATIONS)[1])


def _moved_location(page: Struct, delta: int, rows: int) -> Struct:
    """A page location moved by `delta` bytes and `rows` rows (optional fields dropped)."""
    return Struct(
        [
            [field_ids.PAGE_OFFSET, I64, page.get(field_ids.PAGE_OFFSET) + delta],
            [field_ids.PAGE_SIZE, I32, page.get(field_ids.PAGE_SIZE)],
            [field_ids.PAGE_FIRST_ROW, I64, page.get(field_ids.PAGE_FIRST_ROW) + rows],
        ]
    )


def _wire(elements: Sequence[Struct]) -> bytes:
    out = bytearray()
    for element in elements:
        write_struct(out, element)
    return bytes(out)

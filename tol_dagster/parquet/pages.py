"""Read a row range of a row group decoding only the pages that hold it (`read_rows`).

Why: neither pyarrow nor DuckDB skips the `emb` pages before a row range (a 50k-row row
group's `emb` is ~75 MB), so a small slice would pay for decoding whole row groups. The offset
index says which pages hold the rows; those pages (and the dictionary page) are handed to
pyarrow as a small parquet file per column, so pyarrow does all the decoding. `decode_rows` is
the plain path, from the row group's start, for when the pages cannot be trusted.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.decoded import DECODED, DecodedChunk, values_of
from tol_dagster.parquet.footer import (
    MAGIC,
    Footer,
    LazyFile,
    SpliceError,
    chunk_start,
    page_header,
    parse_struct,
    pread_into,
    pread_struct,
)
from tol_dagster.parquet.list_values import regular_list_column
from tol_dagster.parquet.thrift import (
    I32,
    I64,
    LIST,
    STRUCT,
    Struct,
    write_struct,
)

#: Strings whose dictionary holds at most one value per this many rows of the pages read are
#: decoded as Arrow dictionary indices, and `values_of` looks up only the rows asked for (or,
#: read again, all of them once: `DecodedPages.with_values`): a taxon's names repeat for
#: thousands of rows, and building their strings costs ~5x the indices.
DICTIONARY_SHARE = 4


def read_rows(
    footer: Footer, row_group: int, start: int, stop: int, columns: Collection[str] | None = None
) -> pa.Table:
    """Rows [start, stop) of `row_group` (relative to it), decoding only the pages holding them
    (of the named `columns` only, in file order, when given).

    Types are what the parquet schema says (the file's Arrow schema is not applied: cast the
    result). Nothing read is trusted: the offset index must be ordered and inside its column
    chunk, every page header must parse and end where the next begins, and the pages must
    decode to exactly the rows the offset index says they hold. SpliceError on any anomaly
    (also when a column has no offset index or more than one leaf): the caller decodes the
    row range with pyarrow instead (`decode_rows`).
    """
    fields = footer.top_level_fields()
    group = footer.row_groups[row_group]
    chunks = group.get(field_ids.RG_COLUMNS)[1]
    rows = int(group.get(field_ids.RG_NUM_ROWS))
    if not 0 <= start < stop <= rows:
        raise ValueError(f"rows {start}..{stop} are not in a row group of {rows} rows")
    read, names = [], []
    with LazyFile(footer.path) as file:
        for (name, elements), chunk in zip(fields, chunks, strict=True):
            if columns is not None and name not in columns:
                continue
            names.append(name)
            try:
                read.append(_read_column(footer, file, elements, chunk, start, stop, rows))
            except (IndexError, KeyError, TypeError, AttributeError, struct.error) as error:
                raise SpliceError(f"{footer.path}: damaged page index ({error!r})") from error
            except pa.ArrowException as error:
                raise SpliceError(
                    f"{footer.path}: row group {row_group}, column {name}: its pages do not "
                    f"decode ({error})"
                ) from error
    return pa.table(read, names=names)


def decode_rows(path: Path, row_group: int, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of `row_group` decoded by pyarrow from the row group's start: the
    slow, plain path when the pages cannot be read on their own. Arrow types (the file's
    Arrow schema applied)."""
    parquet = pq.ParquetFile(path)
    batches, position = [], 0
    for batch in parquet.iter_batches(
        batch_size=max(1, min(stop, 64 * 1024)), row_groups=[row_group], use_threads=False
    ):
        low, high = max(start, position), min(stop, position + batch.num_rows)
        if low < high:
            batches.append(batch.slice(low - position, high - low))
        position += batch.num_rows
        if position >= stop:
            break
    table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    if table.num_rows != stop - start:
        raise SpliceError(
            f"{path}: row group {row_group} decodes to {position} rows, not the {stop} or more "
            "its footer promises"
        )
    return table


@dataclass(frozen=True)
class _Pages:
    """The pages of one column chunk that hold a row range, as the body of a parquet file:
    `body` is the magic, the dictionary page if any (of `dictionary` values, else None), then
    data pages `first`..`last` (from byte `data_start`), holding `values` values,
    `uncompressed` bytes once decompressed (headers included) and the chunk's rows
    [`rows[0]`, `rows[1]`). `_one_column_file` appends the file's footer to `body`."""

    body: bytearray
    data_start: int
    dictionary: int | None
    first: int
    last: int
    values: int
    uncompressed: int
    rows: tuple[int, int]


def _read_column(
    footer: Footer,
    file: LazyFile,
    elements: list[Struct],
    chunk: Struct,
    start: int,
    stop: int,
    rows: int,
) -> pa.ChunkedArray:
    """One column of `read_rows`: its pages for the rows, as a one-column parquet file (or as
    decoded for the previous read of this chunk, if that covered them)."""
    if not chunk.has(field_ids.CC_OFFSET_INDEX):
        raise SpliceError(f"{footer.path}: a column chunk has no offset index")
    meta = chunk.get(field_ids.CC_META).shallow()  # `_one_column_file` changes its fields
    key = (id(footer), chunk_start(meta))
    known = DECODED.get(key, footer)
    locations = (
        known.locations
        if known is not None
        else _locations(footer.path, file.handle, chunk, meta, rows)
    )
    first, last, covered = _page_range(locations, start, stop, rows)
    if known is not None and known.covers(first, last):
        return DECODED.with_values(key, known).slice(start - known.covered[0], stop - start)
    pages = _pages(footer.path, file.handle, meta, locations, first, last, covered)
    column = _decoded(footer, elements, meta, pages, _page_rows(locations, pages))
    if len(column) != covered[1] - covered[0]:
        raise SpliceError(
            f"{footer.path}: pages {pages.first}..{pages.last} of a column decode to "
            f"{len(column)} rows where its offset index says {covered[1] - covered[0]}"
        )
    DECODED.put(key, DecodedChunk(footer, locations, first, last, covered, column))
    return values_of(column.slice(start - covered[0], stop - start))


def _decoded(
    footer: Footer, elements: list[Struct], meta: Struct, pages: _Pages, page_rows: list[int]
) -> pa.ChunkedArray:
    """The rows of `pages`: read in place when they are the pages of a regular list of floats
    (`emb`: Arrow's nested decoding costs ten times that), else decoded by pyarrow from a
    one-column parquet file of them (strings of few distinct values as a dictionary)."""
    if pages.dictionary is None:
        body = memoryview(pages.body)[pages.data_start :]
        codec = meta.get(field_ids.CM_CODEC)
        values = regular_list_column(footer.path, elements, codec, body, page_rows)
        del body  # a view left would keep `_one_column_file` from extending the bytes
        if values is not None:
            return pa.chunked_array([values])
    data = _one_column_file(footer, elements, meta, pages)
    leaf = elements[0].get(field_ids.SCHEMA_TYPE) if len(elements) == 1 else None
    few = (
        leaf == field_ids.BYTE_ARRAY
        and pages.dictionary is not None
        and pages.dictionary * DICTIONARY_SHARE <= pages.values
    )
    name = elements[0].get(field_ids.SCHEMA_NAME).decode()
    parquet = pq.ParquetFile(pa.BufferReader(data), read_dictionary=[name] if few else None)
    return parquet.read(use_threads=False).column(0)


def _page_rows(locations: list[Struct], pages: _Pages) -> list[int]:
    """The rows each page of `pages` holds, by the offset index."""
    firsts = [
        page.get(field_ids.PAGE_FIRST_ROW) for page in locations[pages.first : pages.last + 1]
    ]
    return [b - a for a, b in zip(firsts, [*firsts[1:], pages.rows[1]], strict=True)]


def _locations(
    path: Path, handle: BinaryIO, chunk: Struct, meta: Struct, rows: int
) -> list[Struct]:
    """The page locations of `chunk`'s offset index, checked (`check_locations`)."""
    index = pread_struct(
        handle, chunk.get(field_ids.CC_OFFSET_INDEX), chunk.get(field_ids.CC_OFFSET_INDEX_LENGTH)
    )
    locations: list[Struct] = index.get(field_ids.PAGE_LOCATIONS)[1]
    check_locations(path, locations, meta, rows)
    return locations


def _page_range(
    locations: list[Struct], start: int, stop: int, rows: int
) -> tuple[int, int, tuple[int, int]]:
    """The first and last page holding rows [start, stop), and the rows those pages hold."""
    firsts = [page.get(field_ids.PAGE_FIRST_ROW) for page in locations]
    first = bisect.bisect_right(firsts, start) - 1
    last = bisect.bisect_left(firsts, stop) - 1
    return first, last, (firsts[first], firsts[last + 1] if last + 1 < len(firsts) else rows)


def _pages(
    path: Path,
    handle: BinaryIO,
    meta: Struct,
    locations: list[Struct],
    first: int,
    last: int,
    covered: tuple[int, int],
) -> _Pages:
    """Pages `first`..`last` of a column chunk (holding its rows `covered`), with the
    dictionary page, and their totals (checked against the offset index for data pages v2).
    The bytes are read straight into the body, which `_one_column_file` then completes in
    place: each copy of a page's bytes is fresh memory, faulted in page by page."""
    (offset, size), entries = _dictionary_page(
        path, handle, meta, locations[0].get(field_ids.PAGE_OFFSET)
    )
    data_start = len(MAGIC) + size
    begin = locations[first].get(field_ids.PAGE_OFFSET)
    end = locations[last].get(field_ids.PAGE_OFFSET) + locations[last].get(field_ids.PAGE_SIZE)
    file_size = os.fstat(handle.fileno()).st_size
    if max(end, offset + size) > file_size:  # before allocating what a footer claims
        raise SpliceError(f"{path}: pages past the end of the file ({file_size:,} bytes)")
    body = bytearray(data_start + end - begin)
    body[: len(MAGIC)] = MAGIC
    with memoryview(body) as view:
        if size:
            pread_into(handle, offset, view[len(MAGIC) : data_start])
        pread_into(handle, begin, view[data_start:])
        values, uncompressed, v2_rows = _page_totals(
            view[data_start:], path, data_pages=last - first + 1
        )
        if entries is not None:
            uncompressed += _page_totals(view[len(MAGIC) : data_start], path, data_pages=0)[1]
    if v2_rows is not None and v2_rows != covered[1] - covered[0]:
        raise SpliceError(
            f"{path}: data pages v2 hold {v2_rows} rows where the offset index says "
            f"{covered[1] - covered[0]}"
        )
    return _Pages(body, data_start, entries, first, last, values, uncompressed, covered)


def _one_column_file(
    footer: Footer, elements: list[Struct], meta: Struct, pages: _Pages
) -> bytearray:
    """`pages` as a parquet file of one column and one row group: `meta` (the chunk's column
    metadata, a copy) rewritten to describe those pages only, its footer appended to
    `pages.body` (which is then that file)."""
    meta.drop(*field_ids.CM_OF_ALL_ROWS)
    meta.set(field_ids.CM_NUM_VALUES, pages.values)
    meta.set(field_ids.CM_TOTAL_UNCOMPRESSED, pages.uncompressed)
    meta.set(field_ids.CM_TOTAL_COMPRESSED, len(pages.body) - len(MAGIC))
    meta.set(field_ids.CM_DATA_PAGE, pages.data_start)
    meta.drop(field_ids.CM_DICTIONARY_PAGE)
    if pages.dictionary is not None:
        meta.put(field_ids.CM_DICTIONARY_PAGE, I64, len(MAGIC))
    root = footer.meta.get(field_ids.FILE_SCHEMA)[1][0].copy()
    root.set(field_ids.SCHEMA_NUM_CHILDREN, 1)
    chunk = Struct(
        [[field_ids.CC_FILE_OFFSET, I64, pages.data_start], [field_ids.CC_META, STRUCT, meta]]
    )
    group = Struct(
        [
            [field_ids.RG_COLUMNS, LIST, (STRUCT, [chunk])],
            [field_ids.RG_TOTAL_BYTE_SIZE, I64, pages.uncompressed],
            [field_ids.RG_NUM_ROWS, I64, pages.values],
        ]
    )
    # Row counts are the values (every row has one or more): an upper bound, so pyarrow
    # decodes every row the pages hold, and a page index that misplaces a page shows up as
    # a length that differs from what it promised, never as rows shifted.
    file_meta = Struct(
        [
            [field_ids.FILE_VERSION, I32, footer.meta.get(field_ids.FILE_VERSION)],
            [field_ids.FILE_SCHEMA, LIST, (STRUCT, [root, *elements])],
            [field_ids.FILE_NUM_ROWS, I64, pages.values],
            [field_ids.FILE_ROW_GROUPS, LIST, (STRUCT, [group])],
        ]
    )
    tail = bytearray()
    write_struct(tail, file_meta)
    body = pages.body
    body += tail
    body += struct.pack("<I", len(tail))
    body += MAGIC
    return body


def check_locations(path: Path, locations: list[Struct], meta: Struct, rows: int) -> None:
    """The offset index is usable: pages start at row 0, in row and byte order, inside the
    column chunk's bytes, each starting after the previous one ends."""
    chunk_begin = chunk_start(meta)
    chunk_end = chunk_begin + int(meta.get(field_ids.CM_TOTAL_COMPRESSED))
    previous_row, previous_end = -1, chunk_begin
    for index, page in enumerate(locations):
        row, offset, size = (
            page.get(field_ids.PAGE_FIRST_ROW),
            page.get(field_ids.PAGE_OFFSET),
            page.get(field_ids.PAGE_SIZE),
        )
        if (
            (index == 0 and row != 0)
            or row <= previous_row
            or row >= rows
            or size <= 0
            or offset < previous_end
            or offset + size > chunk_end
        ):
            raise SpliceError(
                f"{path}: the offset index's page {index} (row {row}, bytes {offset}+{size}) "
                f"does not fit its column chunk (bytes {chunk_begin}..{chunk_end}, {rows} rows)"
            )
        previous_row, previous_end = row, offset + size
    if not locations:
        raise SpliceError(f"{path}: an offset index lists no pages")


def _dictionary_page(
    path: Path, handle: BinaryIO, meta: Struct, first_data_page: int
) -> tuple[tuple[int, int], int | None]:
    """Where the column chunk's dictionary page is (offset and size, header included) and its
    number of values ((0, 0) and None without one), found from the column metadata: at
    `dictionary_page_offset`, or (writers that leave it unset) at the chunk's start when a
    page sits there before the first data page. Its header must say it is a dictionary page."""
    offset = meta.get(field_ids.CM_DICTIONARY_PAGE)
    strict = bool(offset)
    if not offset:  # absent, or 0 for "none" (some writers)
        offset = int(meta.get(field_ids.CM_DATA_PAGE))
        if offset >= first_data_page:
            return (0, 0), None
    header, size = page_header(path, handle, offset, first_data_page - offset)
    if header.get(field_ids.HEADER_TYPE) != field_ids.DICTIONARY_PAGE:
        if strict:
            raise SpliceError(f"{path}: no dictionary page at dictionary_page_offset {offset}")
        return (0, 0), None
    compressed = header.get(field_ids.HEADER_COMPRESSED)
    if not isinstance(compressed, int) or compressed < 0:
        raise SpliceError(f"{path}: the dictionary page at {offset} claims {compressed!r} bytes")
    length = size + compressed
    if offset + length > first_data_page and offset < first_data_page:
        raise SpliceError(f"{path}: the dictionary page at {offset} overlaps the data pages")
    entries = header.get(field_ids.HEADER_DICTIONARY).get(field_ids.DATA_NUM_VALUES)
    return (offset, length), int(entries)


def _page_totals(pages: memoryview, path: Path, *, data_pages: int) -> tuple[int, int, int | None]:
    """(values in the data pages, uncompressed bytes with headers, rows of the pages when all
    are data pages v2, else None) of consecutive pages, which must be `data_pages` data pages
    (0: one dictionary page) ending exactly at the end of `pages`."""
    values = uncompressed = position = seen = 0
    v2_rows: int | None = 0
    while position < len(pages):
        header, body = parse_struct(pages, position, path)
        kind = header.get(field_ids.HEADER_TYPE)
        if kind == field_ids.DICTIONARY_PAGE and data_pages == 0:
            pass
        elif kind in (field_ids.DATA_PAGE, field_ids.DATA_PAGE_V2) and data_pages:
            payload = header.get(
                field_ids.HEADER_DATA_V1
                if kind == field_ids.DATA_PAGE
                else field_ids.HEADER_DATA_V2
            )
            values += payload.get(field_ids.DATA_NUM_VALUES)
            v2_rows = (
                None
                if kind == field_ids.DATA_PAGE or v2_rows is None
                else v2_rows + payload.get(field_ids.DATA_V2_NUM_ROWS)
            )
            seen += 1
        else:
            raise SpliceError(f"{path}: a page of type {kind} among the pages read")
        uncompressed += body - position + header.get(field_ids.HEADER_UNCOMPRESSED)
        position = body + header.get(field_ids.HEADER_COMPRESSED)
    if position != len(pages) or seen != data_pages:
        raise SpliceError(
            f"{path}: the pages read end at byte {position} of {len(pages)} after {seen} data "
            f"pages, where the offset index promises {data_pages}"
        )
    return values, uncompressed, v2_rows

"""Parquet at the byte level: copy whole row groups into a new file (`Splicer`), and read a
row range of a row group decoding only the pages that hold it (`read_rows`).

Why: decoding and re-encoding `emb` (a nested `fixed_size_list<halffloat>`) costs pyarrow
~15 µs a row, while copying a row group's column chunks is plain I/O; and neither pyarrow nor
DuckDB skips the `emb` pages before a row range (a 50k-row row group's `emb` is ~75 MB).

Footers and page headers are Thrift compact protocol: `read_footer` parses them into structs
keyed by field id that keep every field, known or not, and they are written back as read, so
nothing changes but what we set. `Splicer` moves the page indexes of the row groups it copies
along with them, and drops their bloom filters (optional; pyarrow writes none). `read_rows`
uses the offset index to find the pages, and hands pyarrow a small parquet file per column
made of those pages (and the dictionary page), so pyarrow does all the decoding.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# Thrift compact protocol types.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_INTS = (_I16, _I32, _I64)

# Field ids of parquet.thrift used here.
_FILE_SCHEMA, _FILE_NUM_ROWS, _FILE_ROW_GROUPS = 2, 3, 4
_FILE_ENCRYPTION = (8, 9)
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_PATH, _CC_FILE_OFFSET, _CC_META = 1, 2, 3
_CC_OFFSET_INDEX, _CC_OFFSET_INDEX_LENGTH, _CC_COLUMN_INDEX, _CC_COLUMN_INDEX_LENGTH = 4, 5, 6, 7
_CC_ENCRYPTION = (8, 9)
_CM_NUM_VALUES, _CM_TOTAL_UNCOMPRESSED = 5, 6
_CM_TOTAL_COMPRESSED, _CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE = 7, 9, 10, 11
_CM_DROPPED = (14, 15)  # bloom filter offset and length
_CM_OF_ALL_ROWS = (10, 12, 13, 14, 15, 16, 17)  # statistics and indexes: wrong for a subset
_SCHEMA_NUM_CHILDREN = 5
_PAGE_LOCATIONS, _PAGE_OFFSET, _PAGE_SIZE, _PAGE_FIRST_ROW = 1, 1, 2, 3
_HEADER_TYPE, _HEADER_UNCOMPRESSED, _HEADER_COMPRESSED = 1, 2, 3
_HEADER_DATA_V1, _HEADER_DATA_V2 = 5, 8  # each holds num_values as field 1; v2 num_rows as 3
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3  # PageType


class Writable(Protocol):
    """Where `Splicer` writes. A sink may also offer `copy_range(path, start, length)` to
    append a byte range of a file without the bytes passing through Python."""

    def write(self, data: bytes, /) -> Any: ...


class SpliceError(ValueError):
    """The files cannot be spliced (different schemas, encryption, scattered column chunks)."""


class Struct:
    """A Thrift struct as read: (field id, type, value) in wire order, unknown fields kept."""

    def __init__(self, fields: list[list[Any]]) -> None:
        self.fields = fields

    def get(self, field_id: int, default: Any = None) -> Any:
        return next((f[2] for f in self.fields if f[0] == field_id), default)

    def set(self, field_id: int, value: Any) -> None:
        for field in self.fields:
            if field[0] == field_id:
                field[2] = value
                return
        raise KeyError(field_id)

    def put(self, field_id: int, kind: int, value: Any) -> None:
        """Set a field, adding it in field-id order if absent."""
        self.drop(field_id)
        self.fields.append([field_id, kind, value])
        self.fields.sort(key=lambda field: field[0])

    def drop(self, *field_ids: int) -> None:
        self.fields = [f for f in self.fields if f[0] not in field_ids]

    def has(self, field_id: int) -> bool:
        return any(f[0] == field_id for f in self.fields)

    def copy(self) -> Struct:
        return Struct([[i, t, _copy(t, v)] for i, t, v in self.fields])


@dataclass(frozen=True)
class Footer:
    """A parquet file's footer: its metadata, and where its bytes are (the file at `path`, or
    `data` for a file held in memory)."""

    path: Path
    meta: Struct
    data: Any = None

    @property
    def row_groups(self) -> list[Struct]:
        return self.meta.get(_FILE_ROW_GROUPS)[1]

    @property
    def schema(self) -> bytes:
        """The schema's wire bytes: equal bytes, identical physical schema."""
        out = bytearray()
        _write_value(out, _LIST, self.meta.get(_FILE_SCHEMA))
        return bytes(out)

    def has_offset_index(self, row_group: int) -> bool:
        chunks = self.row_groups[row_group].get(_RG_COLUMNS)[1]
        return all(c.has(_CC_OFFSET_INDEX) for c in chunks)

    def top_level_fields(self) -> list[tuple[str, list[Struct]]]:
        """(name, schema elements) of each top-level column, when each has one leaf."""
        elements = self.meta.get(_FILE_SCHEMA)[1]
        fields, position = [], 1
        for _ in range(elements[0].get(_SCHEMA_NUM_CHILDREN)):
            end, leaves = position + 1, 0
            pending = elements[position].get(_SCHEMA_NUM_CHILDREN, 0)
            leaves += pending == 0
            while pending:
                pending += elements[end].get(_SCHEMA_NUM_CHILDREN, 0) - 1
                leaves += not elements[end].get(_SCHEMA_NUM_CHILDREN, 0)
                end += 1
            if leaves != 1:
                raise SpliceError(f"{self.path}: column {position} has {leaves} leaves")
            fields.append((elements[position].get(4).decode(), elements[position:end]))
            position = end
        return fields

    def byte_range(self, row_group: int) -> tuple[int, int]:
        """(start, length) of the row group's column chunks, which must be contiguous."""
        chunks = [c.get(_CC_META) for c in self.row_groups[row_group].get(_RG_COLUMNS)[1]]
        starts = [_chunk_start(m) for m in chunks]
        sizes = [m.get(_CM_TOTAL_COMPRESSED) for m in chunks]
        start, length = min(starts), sum(sizes)
        if max(s + n for s, n in zip(starts, sizes, strict=True)) - start != length:
            raise SpliceError(f"{self.path}: row group {row_group} is not one contiguous block")
        return start, length


def read_footer(path: Path) -> Footer:
    """The parsed footer of the parquet file at `path`; SpliceError if we cannot splice it.

    Parsed once per file version (a slice asks several times; parsing is pure Python) and
    shared: treat it as read-only, copy a struct before changing it.
    """
    status = os.stat(path)
    return _footer(str(path), status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _footer(path: str, inode: int, size: int, mtime_ns: int) -> Footer:
    with open(path, "rb") as handle:
        handle.seek(-8, 2)
        tail = handle.read(8)
        length = struct.unpack("<I", tail[:4])[0]
        handle.seek(-8 - length, 2)
        return parse_footer(handle.read(length) + tail, Path(path))


def parse_footer(tail: Any, path: Path, data: Any = None) -> Footer:
    """Parse a footer from the last bytes of a parquet file (at least the whole footer); `data`
    is the whole file when it is held in memory (`tail` may be it)."""
    view = memoryview(tail).cast("B")  # pyarrow buffers export signed bytes
    size = struct.unpack("<I", view[-8:-4])[0]
    if view[-4:] != MAGIC or size + 8 > len(view):
        raise SpliceError(f"{path}: not a plain parquet file (encrypted or truncated)")
    meta, _ = _parse(view[-8 - size : -8], 0, path)
    if any(meta.has(i) for i in _FILE_ENCRYPTION):
        raise SpliceError(f"{path}: encrypted footers are not spliced")
    if not all(meta.has(i) for i in (_FILE_SCHEMA, _FILE_NUM_ROWS, _FILE_ROW_GROUPS)):
        raise SpliceError(f"{path}: damaged parquet metadata (no schema or row groups)")
    footer = Footer(path, meta, data)
    try:
        chunks = [c for group in footer.row_groups for c in group.get(_RG_COLUMNS)[1]]
        if any(
            c.has(_CC_FILE_PATH) or c.has(_CC_ENCRYPTION[0]) or c.has(_CC_ENCRYPTION[1])
            for c in chunks
        ):
            raise SpliceError(f"{path}: column chunks in other files or encrypted")
    except (AttributeError, IndexError, TypeError) as error:
        raise SpliceError(f"{path}: damaged parquet metadata ({error!r})") from error
    return footer


class Splicer:
    """Writes a parquet file to `sink` row group by row group, each copied from a file whose
    footer was read: `add` as often as needed, then `close` writes the page indexes (kept for
    every copied row group that had them, offsets moved) and the footer."""

    def __init__(self, sink: Writable, template: Footer) -> None:
        self.sink, self.template = sink, template
        self.groups: list[Struct] = []
        self.column_indexes: list[tuple[Struct, bytes]] = []
        self.offset_indexes: list[tuple[Struct, bytes]] = []
        sink.write(MAGIC)
        self.position = len(MAGIC)

    def add(self, footer: Footer, row_group: int) -> None:
        """Append `row_group` of `footer`'s file; its physical schema must be the template's.

        An empty row group adds nothing: it has no rows, and writers give its column chunks
        no usable offsets (pyarrow: data page offset 0)."""
        if footer.schema != self.template.schema:
            raise SpliceError(f"{footer.path}: its schema differs from {self.template.path}'s")
        if not footer.row_groups[row_group].get(_RG_NUM_ROWS):
            return
        start, length = footer.byte_range(row_group)
        delta = self.position - start
        moved = _moved(footer.row_groups[row_group], delta, len(self.groups))
        try:
            for chunk in moved.get(_RG_COLUMNS)[1]:
                self._keep_indexes(footer, chunk, delta)
        except (AttributeError, IndexError, KeyError, TypeError) as error:
            raise SpliceError(f"{footer.path}: damaged page index ({error!r})") from error
        copy_range = getattr(self.sink, "copy_range", None)
        if footer.data is None and copy_range is not None:
            copy_range(footer.path, start, length)
        else:
            for block in _blocks(footer, start, length):
                self.sink.write(block)
        self.groups.append(moved)
        self.position += length

    def _keep_indexes(self, footer: Footer, chunk: Struct, delta: int) -> None:
        """Hold a chunk's page indexes for `close`: the column index as is, the offset index
        with its page offsets moved."""
        if chunk.has(_CC_OFFSET_INDEX):
            blob = _read_bytes(
                footer, chunk.get(_CC_OFFSET_INDEX), chunk.get(_CC_OFFSET_INDEX_LENGTH)
            )
            offsets = _parse(memoryview(blob), 0, footer.path)[0]
            for page in offsets.get(_PAGE_LOCATIONS)[1]:
                _shift(page, _PAGE_OFFSET, delta)
            moved = bytearray()
            _write_struct(moved, offsets)
            self.offset_indexes.append((chunk, bytes(moved)))
        if chunk.has(_CC_COLUMN_INDEX):
            blob = _read_bytes(
                footer, chunk.get(_CC_COLUMN_INDEX), chunk.get(_CC_COLUMN_INDEX_LENGTH)
            )
            self.column_indexes.append((chunk, blob))
        chunk.drop(
            _CC_OFFSET_INDEX, _CC_OFFSET_INDEX_LENGTH, _CC_COLUMN_INDEX, _CC_COLUMN_INDEX_LENGTH
        )

    def close(self) -> int:
        """Write the page indexes and the footer (the template's, with our row groups);
        returns the file's rows."""
        for held, (offset, length) in (
            (self.column_indexes, (_CC_COLUMN_INDEX, _CC_COLUMN_INDEX_LENGTH)),
            (self.offset_indexes, (_CC_OFFSET_INDEX, _CC_OFFSET_INDEX_LENGTH)),
        ):
            for chunk, blob in held:
                chunk.put(offset, _I64, self.position)
                chunk.put(length, _I32, len(blob))
                self.sink.write(blob)
                self.position += len(blob)
        meta = self.template.meta.copy()
        meta.set(_FILE_ROW_GROUPS, (_STRUCT, self.groups))
        meta.set(_FILE_NUM_ROWS, sum(g.get(_RG_NUM_ROWS) for g in self.groups))
        footer = bytearray()
        _write_struct(footer, meta)
        self.sink.write(bytes(footer))
        self.sink.write(struct.pack("<I", len(footer)) + MAGIC)
        return int(meta.get(_FILE_NUM_ROWS))


def read_rows(footer: Footer, row_group: int, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of `row_group` (relative to it), decoding only the pages holding them.

    Types are what the parquet schema says (the file's Arrow schema is not applied: cast the
    result). Nothing read is trusted: the offset index must be ordered and inside its column
    chunk, every page header must parse and end where the next begins, and the pages must
    decode to exactly the rows the offset index says they hold. SpliceError on any anomaly
    (also when a column has no offset index or more than one leaf): the caller decodes the
    row range with pyarrow instead (`decode_rows`).
    """
    fields = footer.top_level_fields()
    group = footer.row_groups[row_group]
    chunks = group.get(_RG_COLUMNS)[1]
    rows = int(group.get(_RG_NUM_ROWS))
    if not 0 <= start < stop <= rows:
        raise ValueError(f"rows {start}..{stop} are not in a row group of {rows} rows")
    columns = []
    with open(footer.path, "rb") as handle:
        for (name, elements), chunk in zip(fields, chunks, strict=True):
            try:
                columns.append(_read_column(footer, handle, elements, chunk, start, stop, rows))
            except (IndexError, KeyError, TypeError, AttributeError, struct.error) as error:
                raise SpliceError(f"{footer.path}: damaged page index ({error!r})") from error
            except pa.ArrowException as error:
                raise SpliceError(
                    f"{footer.path}: row group {row_group}, column {name}: its pages do not "
                    f"decode ({error})"
                ) from error
    return pa.table(columns, names=[name for name, _ in fields])


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


def _read_column(
    footer: Footer,
    handle: BinaryIO,
    elements: list[Struct],
    chunk: Struct,
    start: int,
    stop: int,
    rows: int,
) -> pa.ChunkedArray:
    """One column of `read_rows`: its pages for the rows, as a one-column parquet file."""
    if not chunk.has(_CC_OFFSET_INDEX):
        raise SpliceError(f"{footer.path}: a column chunk has no offset index")
    meta = chunk.get(_CC_META).copy()
    pages = _pread_struct(handle, chunk.get(_CC_OFFSET_INDEX), chunk.get(_CC_OFFSET_INDEX_LENGTH))
    locations = pages.get(_PAGE_LOCATIONS)[1]
    _check_locations(footer.path, locations, meta, rows)
    firsts = [page.get(_PAGE_FIRST_ROW) for page in locations]
    first = bisect.bisect_right(firsts, start) - 1
    last = bisect.bisect_left(firsts, stop) - 1
    covered = firsts[first], firsts[last + 1] if last + 1 < len(firsts) else rows
    body = bytearray(MAGIC)
    dictionary = _dictionary_page(footer.path, handle, meta, locations[0].get(_PAGE_OFFSET))
    if dictionary is not None:
        body += dictionary
    data_start = len(body)
    begin = locations[first].get(_PAGE_OFFSET)
    end = locations[last].get(_PAGE_OFFSET) + locations[last].get(_PAGE_SIZE)
    body += _pread(handle, begin, end - begin)
    values, uncompressed, v2_rows = _page_totals(
        memoryview(body)[data_start:], footer.path, data_pages=last - first + 1
    )
    if v2_rows is not None and v2_rows != covered[1] - covered[0]:
        raise SpliceError(
            f"{footer.path}: data pages v2 hold {v2_rows} rows where the offset index says "
            f"{covered[1] - covered[0]}"
        )
    if dictionary is not None:
        uncompressed += _page_totals(memoryview(dictionary), footer.path, data_pages=0)[1]
    meta.drop(*_CM_OF_ALL_ROWS)
    meta.set(_CM_NUM_VALUES, values)
    meta.set(_CM_TOTAL_UNCOMPRESSED, uncompressed)
    meta.set(_CM_TOTAL_COMPRESSED, len(body) - len(MAGIC))
    meta.set(_CM_DATA_PAGE, data_start)
    meta.drop(_CM_DICTIONARY_PAGE)
    if dictionary is not None:
        meta.put(_CM_DICTIONARY_PAGE, _I64, len(MAGIC))
    root = footer.meta.get(_FILE_SCHEMA)[1][0].copy()
    root.set(_SCHEMA_NUM_CHILDREN, 1)
    group = Struct(
        [
            [
                _RG_COLUMNS,
                _LIST,
                (
                    _STRUCT,
                    [Struct([[_CC_FILE_OFFSET, _I64, data_start], [_CC_META, _STRUCT, meta]])],
                ),
            ],
            [2, _I64, uncompressed],
            [_RG_NUM_ROWS, _I64, values],
        ]
    )
    # Row counts are the values (every row has one or more): an upper bound, so pyarrow
    # decodes every row the pages hold, and a page index that misplaces a page shows up as
    # a length that differs from what it promised, never as rows shifted.
    file_meta = Struct(
        [
            [1, _I32, footer.meta.get(1)],
            [_FILE_SCHEMA, _LIST, (_STRUCT, [root, *elements])],
            [_FILE_NUM_ROWS, _I64, values],
            [_FILE_ROW_GROUPS, _LIST, (_STRUCT, [group])],
        ]
    )
    tail = bytearray()
    _write_struct(tail, file_meta)
    body += tail + struct.pack("<I", len(tail)) + MAGIC
    column = pq.ParquetFile(pa.BufferReader(bytes(body))).read(use_threads=False).column(0)
    if len(column) != covered[1] - covered[0]:
        raise SpliceError(
            f"{footer.path}: pages {first}..{last} of a column decode to {len(column)} rows "
            f"where its offset index says {covered[1] - covered[0]}"
        )
    return column.slice(start - covered[0], stop - start)


def _check_locations(path: Path, locations: list[Struct], meta: Struct, rows: int) -> None:
    """The offset index is usable: pages start at row 0, in row and byte order, inside the
    column chunk's bytes, each starting after the previous one ends."""
    chunk_start = _chunk_start(meta)
    chunk_end = chunk_start + int(meta.get(_CM_TOTAL_COMPRESSED))
    previous_row, previous_end = -1, chunk_start
    for index, page in enumerate(locations):
        row, offset, size = (
            page.get(_PAGE_FIRST_ROW),
            page.get(_PAGE_OFFSET),
            page.get(_PAGE_SIZE),
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
                f"does not fit its column chunk (bytes {chunk_start}..{chunk_end}, {rows} rows)"
            )
        previous_row, previous_end = row, offset + size
    if not locations:
        raise SpliceError(f"{path}: an offset index lists no pages")


def _dictionary_page(
    path: Path, handle: BinaryIO, meta: Struct, first_data_page: int
) -> bytes | None:
    """The column chunk's dictionary page (header and body), found from the column metadata:
    at `dictionary_page_offset`, or (writers that leave it unset) at the chunk's start when a
    page sits there before the first data page. Its header must say it is a dictionary page."""
    offset = meta.get(_CM_DICTIONARY_PAGE)
    strict = bool(offset)
    if not offset:  # absent, or 0 for "none" (some writers)
        offset = int(meta.get(_CM_DATA_PAGE))
        if offset >= first_data_page:
            return None
    header, size = _page_header(path, handle, offset, first_data_page - offset)
    if header.get(_HEADER_TYPE) != _DICTIONARY_PAGE:
        if strict:
            raise SpliceError(f"{path}: no dictionary page at dictionary_page_offset {offset}")
        return None
    length = size + header.get(_HEADER_COMPRESSED)
    if offset + length > first_data_page and offset < first_data_page:
        raise SpliceError(f"{path}: the dictionary page at {offset} overlaps the data pages")
    return _pread(handle, offset, length)


def _page_header(path: Path, handle: BinaryIO, offset: int, room: int) -> tuple[Struct, int]:
    """The page header at `offset` and its size in bytes; reads more until it parses whole."""
    want = 256
    while True:
        handle.seek(offset)
        data = handle.read(want)
        try:
            return _read_struct(memoryview(data), 0)
        except (IndexError, struct.error) as error:
            if len(data) < want or want >= max(room, 1 << 20):
                raise SpliceError(f"{path}: no page header at byte {offset} ({error!r})") from error
            want *= 4
        except (KeyError, TypeError, ValueError, RecursionError) as error:
            raise SpliceError(f"{path}: no page header at byte {offset} ({error!r})") from error


def _page_totals(pages: memoryview, path: Path, *, data_pages: int) -> tuple[int, int, int | None]:
    """(values in the data pages, uncompressed bytes with headers, rows of the pages when all
    are data pages v2, else None) of consecutive pages, which must be `data_pages` data pages
    (0: one dictionary page) ending exactly at the end of `pages`."""
    values = uncompressed = position = seen = 0
    v2_rows: int | None = 0
    while position < len(pages):
        header, body = _parse(pages, position, path)
        kind = header.get(_HEADER_TYPE)
        if kind == _DICTIONARY_PAGE and data_pages == 0:
            pass
        elif kind in (_DATA_PAGE, _DATA_PAGE_V2) and data_pages:
            payload = header.get(_HEADER_DATA_V1 if kind == _DATA_PAGE else _HEADER_DATA_V2)
            values += payload.get(1)
            v2_rows = None if kind == _DATA_PAGE or v2_rows is None else v2_rows + payload.get(3)
            seen += 1
        else:
            raise SpliceError(f"{path}: a page of type {kind} among the pages read")
        uncompressed += body - position + header.get(_HEADER_UNCOMPRESSED)
        position = body + header.get(_HEADER_COMPRESSED)
    if position != len(pages) or seen != data_pages:
        raise SpliceError(
            f"{path}: the pages read end at byte {position} of {len(pages)} after {seen} data "
            f"pages, where the offset index promises {data_pages}"
        )
    return values, uncompressed, v2_rows


def _read_bytes(footer: Footer, offset: int, length: int) -> bytes:
    """Bytes of `footer`'s file, wherever it is held."""
    if footer.data is not None:
        return bytes(memoryview(footer.data).cast("B")[offset : offset + length])
    with open(footer.path, "rb") as handle:
        return _pread(handle, offset, length)


def _pread(handle: BinaryIO, offset: int, length: int) -> bytes:
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise SpliceError(f"{handle.name}: ends before byte {offset + length}")
    return data


def _pread_struct(handle: BinaryIO, offset: int, length: int) -> Struct:
    return _parse(memoryview(_pread(handle, offset, length)), 0, Path(handle.name))[0]


def _parse(data: memoryview, pos: int, path: Path) -> tuple[Struct, int]:
    """A Thrift struct at `pos`; SpliceError if the bytes are not one (a damaged file)."""
    try:
        parsed = _read_struct(data, pos)
    except (IndexError, KeyError, TypeError, ValueError, RecursionError, struct.error) as error:
        raise SpliceError(f"{path}: damaged parquet metadata ({error!r})") from error
    return parsed


def _moved(group: Struct, delta: int, ordinal: int) -> Struct:
    """A copy of `group` whose bytes moved by `delta`, without bloom filters (the caller
    places the page indexes)."""
    group = group.copy()
    _shift(group, _RG_FILE_OFFSET, delta)
    if group.has(_RG_ORDINAL):
        group.set(_RG_ORDINAL, ordinal)
    for chunk in group.get(_RG_COLUMNS)[1]:
        _shift(chunk, _CC_FILE_OFFSET, delta)
        meta = chunk.get(_CC_META)
        for field_id in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE):
            if meta.get(field_id):  # some writers put 0 for "none"
                _shift(meta, field_id, delta)
        meta.drop(*_CM_DROPPED)
    return group


def _shift(target: Struct, field_id: int, delta: int) -> None:
    if target.has(field_id):
        target.set(field_id, target.get(field_id) + delta)


def _chunk_start(meta: Struct) -> int:
    data = int(meta.get(_CM_DATA_PAGE))
    dictionary = meta.get(_CM_DICTIONARY_PAGE)
    return min(data, dictionary) if dictionary else data


def _blocks(footer: Footer, start: int, length: int, size: int = 8 << 20) -> Iterator[Any]:
    if footer.data is not None:
        if start + length > len(footer.data):
            raise SpliceError(f"{footer.path}: ends inside a row group")
        yield memoryview(footer.data)[start : start + length]
        return
    path = footer.path
    with open(path, "rb", buffering=0) as handle:
        handle.seek(start)
        while length > 0:
            block = handle.read(min(size, length))
            if not block:
                raise SpliceError(f"{path}: ends inside a row group")
            length -= len(block)
            yield block


# --- Thrift compact protocol ------------------------------------------------------------------


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _read_int(data: memoryview, pos: int) -> tuple[int, int]:
    raw, pos = _read_varint(data, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def _read_value(data: memoryview, pos: int, kind: int) -> tuple[Any, int]:
    if kind in (_TRUE, _FALSE):  # only in containers: one byte each
        return data[pos] == _TRUE, pos + 1
    if kind == _BYTE:
        return struct.unpack_from("<b", data, pos)[0], pos + 1
    if kind in _INTS:
        return _read_int(data, pos)
    if kind == _DOUBLE:
        return struct.unpack_from("<d", data, pos)[0], pos + 8
    if kind == _BINARY:
        size, pos = _read_varint(data, pos)
        return bytes(data[pos : pos + size]), pos + size
    if kind in (_LIST, _SET):
        header = data[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _read_varint(data, pos)
        items = []
        for _ in range(size):
            item, pos = _read_value(data, pos, element)
            items.append(item)
        return (element, items), pos
    if kind == _MAP:
        size, pos = _read_varint(data, pos)
        if size == 0:
            return (0, 0, []), pos
        key_kind, value_kind = data[pos] >> 4, data[pos] & 0x0F
        pos += 1
        pairs = []
        for _ in range(size):
            key, pos = _read_value(data, pos, key_kind)
            value, pos = _read_value(data, pos, value_kind)
            pairs.append((key, value))
        return (key_kind, value_kind, pairs), pos
    if kind == _STRUCT:
        return _read_struct(data, pos)
    raise SpliceError(f"unknown thrift type {kind} in a parquet footer")


def _read_struct(data: memoryview, pos: int) -> tuple[Struct, int]:
    fields: list[list[Any]] = []
    field_id = 0
    while True:
        header = data[pos]
        pos += 1
        if header == 0:
            return Struct(fields), pos
        delta, kind = header >> 4, header & 0x0F
        if delta:
            field_id += delta
        else:
            field_id, pos = _read_int(data, pos)
        if kind in (_TRUE, _FALSE):
            fields.append([field_id, kind, kind == _TRUE])
        else:
            value, pos = _read_value(data, pos, kind)
            fields.append([field_id, kind, value])


def _write_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _write_int(out: bytearray, value: int) -> None:
    _write_varint(out, (value << 1) ^ (value >> 63))


def _write_value(out: bytearray, kind: int, value: Any) -> None:
    if kind in (_TRUE, _FALSE):
        out.append(_TRUE if value else _FALSE)
    elif kind == _BYTE:
        out += struct.pack("<b", value)
    elif kind in _INTS:
        _write_int(out, value)
    elif kind == _DOUBLE:
        out += struct.pack("<d", value)
    elif kind == _BINARY:
        _write_varint(out, len(value))
        out += value
    elif kind in (_LIST, _SET):
        element, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | element)
        else:
            out.append(0xF0 | element)
            _write_varint(out, len(items))
        for item in items:
            _write_value(out, element, item)
    elif kind == _MAP:
        key_kind, value_kind, pairs = value
        _write_varint(out, len(pairs))
        if pairs:
            out.append(key_kind << 4 | value_kind)
            for key, item in pairs:
                _write_value(out, key_kind, key)
                _write_value(out, value_kind, item)
    else:
        _write_struct(out, value)


def _write_struct(out: bytearray, value: Struct) -> None:
    last = 0
    for field_id, kind, item in value.fields:
        wire_kind = (_TRUE if item else _FALSE) if kind in (_TRUE, _FALSE) else kind
        if 0 < field_id - last <= 15:
            out.append((field_id - last) << 4 | wire_kind)
        else:
            out.append(wire_kind)
            _write_int(out, field_id)
        last = field_id
        if kind not in (_TRUE, _FALSE):
            _write_value(out, kind, item)
    out.append(0)


_COPIERS: dict[int, Callable[[Any], Any]] = {
    _STRUCT: lambda v: v.copy(),
    _LIST: lambda v: (v[0], [_copy(v[0], x) for x in v[1]]),
    _SET: lambda v: (v[0], [_copy(v[0], x) for x in v[1]]),
    _MAP: lambda v: (v[0], v[1], [(_copy(v[0], k), _copy(v[1], x)) for k, x in v[2]]),
}


def _copy(kind: int, value: Any) -> Any:
    copier = _COPIERS.get(kind)
    return value if copier is None else copier(value)

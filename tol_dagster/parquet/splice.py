"""Copy whole row groups of parquet files into a new file, as bytes (`Splicer`), and row groups
assembled column by column (`Splicer.add_columns`, see `page_splice`).

Why: decoding and re-encoding `emb` (a nested `fixed_size_list<halffloat>`) costs pyarrow
~15 µs a row, while copying a row group's column chunks is plain I/O. Only the footer is
rebuilt: the row groups' metadata with their offsets moved, written back field for field as
read. The page indexes of the copied row groups move along with them; their bloom filters are
dropped (optional; pyarrow writes none).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import (
    MAGIC,
    Footer,
    SpliceError,
    parse_struct,
    read_bytes,
)
from tol_dagster.parquet.thrift import (
    BINARY,
    I16,
    I32,
    I64,
    LIST,
    STRUCT,
    Raw,
    Struct,
    write_struct,
)


@dataclass(frozen=True)
class Column:
    """A column chunk for `Splicer.add_columns`: its bytes in parts (bytes, or the byte range
    (start, length) of a file), and its ColumnChunk and offset index with every offset relative
    to the chunk's first byte (an optional page offset present means a page is there), its
    column index as bytes (None: none)."""

    parts: list[bytes | memoryview | tuple[Footer, int, int]]
    chunk: Struct
    offset_index: Struct | None
    column_index: bytes | None

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p[2] for p in self.parts)


_PAGE_OFFSETS = (field_ids.CM_DATA_PAGE, field_ids.CM_INDEX_PAGE, field_ids.CM_DICTIONARY_PAGE)


class Writable(Protocol):
    """Where `Splicer` writes. A sink may also offer `copy_range(path, start, length)` to
    append a byte range of a file without the bytes passing through Python."""

    def write(self, data: bytes | bytearray | memoryview, /) -> Any: ...


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

    def add(self, footer: Footer, row_group: int, *, owned: bool = False) -> None:
        """Append `row_group` of `footer`'s file; its physical schema must be the template's.
        `owned`: the footer was parsed for this file alone, so its row group is moved in
        place rather than copied first (a cached footer is shared: never pass it as owned).

        An empty row group adds nothing: it has no rows, and writers give its column chunks
        no usable offsets (pyarrow: data page offset 0)."""
        if footer.schema != self.template.schema:
            raise SpliceError(f"{footer.path}: its schema differs from {self.template.path}'s")
        if not footer.row_groups[row_group].get(field_ids.RG_NUM_ROWS):
            return
        start, length = footer.byte_range(row_group)
        delta = self.position - start
        group = footer.row_groups[row_group]
        moved = _moved(group if owned else _own(group), delta, len(self.groups))
        try:
            for chunk in moved.get(field_ids.RG_COLUMNS)[1]:
                self._keep_indexes(footer, chunk, delta)
        except (AttributeError, IndexError, KeyError, TypeError) as error:
            raise SpliceError(f"{footer.path}: damaged page index ({error!r})") from error
        self._copy(footer, start, length)
        self.groups.append(moved)

    def add_columns(self, columns: Sequence[Column], rows: int) -> None:
        """Append a row group of `rows` rows built column by column: each column's parts
        written in turn, its offsets and page indexes moved to where it lands (in place: the
        columns are the splicer's after, never reuse them)."""
        chunks, start = [], self.position
        for column in columns:
            chunk = column.chunk
            _shift(chunk, field_ids.CC_FILE_OFFSET, self.position)
            meta = chunk.get(field_ids.CC_META)
            for field_id in _PAGE_OFFSETS:
                _shift(meta, field_id, self.position)
            if column.offset_index is not None:
                index = column.offset_index
                for page in index.get(field_ids.PAGE_LOCATIONS)[1]:
                    _shift(page, field_ids.PAGE_OFFSET, self.position)
                blob = bytearray()
                write_struct(blob, index)
                self.offset_indexes.append((chunk, bytes(blob)))
            if column.column_index is not None:
                self.column_indexes.append((chunk, column.column_index))
            for part in column.parts:
                if isinstance(part, tuple):
                    self._copy(*part)
                else:
                    self.sink.write(part)
                    self.position += len(part)
            chunks.append(chunk)
        metas = [chunk.get(field_ids.CC_META) for chunk in chunks]
        group = Struct(
            [
                [field_ids.RG_COLUMNS, LIST, (STRUCT, chunks)],
                [field_ids.RG_TOTAL_BYTE_SIZE, I64, _total(metas, field_ids.CM_TOTAL_UNCOMPRESSED)],
                [field_ids.RG_NUM_ROWS, I64, rows],
                [field_ids.RG_FILE_OFFSET, I64, start],
                [field_ids.RG_TOTAL_COMPRESSED, I64, _total(metas, field_ids.CM_TOTAL_COMPRESSED)],
                [field_ids.RG_ORDINAL, I16, len(self.groups)],
            ]
        )
        self.groups.append(group)

    def _copy(self, footer: Footer, start: int, length: int) -> None:
        """Append bytes [start, start + length) of `footer`'s file."""
        copy_range = getattr(self.sink, "copy_range", None)
        if footer.data is None and copy_range is not None:
            copy_range(footer.path, start, length)
        else:
            for block in _blocks(footer, start, length):
                self.sink.write(block)
        self.position += length

    def _keep_indexes(self, footer: Footer, chunk: Struct, delta: int) -> None:
        """Hold a chunk's page indexes for `close`: the column index as is, the offset index
        with its page offsets moved."""
        if chunk.has(field_ids.CC_OFFSET_INDEX):
            blob = read_bytes(
                footer,
                chunk.get(field_ids.CC_OFFSET_INDEX),
                chunk.get(field_ids.CC_OFFSET_INDEX_LENGTH),
            )
            offsets = parse_struct(memoryview(blob), 0, footer.path)[0]
            for page in offsets.get(field_ids.PAGE_LOCATIONS)[1]:
                _shift(page, field_ids.PAGE_OFFSET, delta)
            moved = bytearray()
            write_struct(moved, offsets)
            self.offset_indexes.append((chunk, bytes(moved)))
        if chunk.has(field_ids.CC_COLUMN_INDEX):
            blob = read_bytes(
                footer,
                chunk.get(field_ids.CC_COLUMN_INDEX),
                chunk.get(field_ids.CC_COLUMN_INDEX_LENGTH),
            )
            self.column_indexes.append((chunk, blob))
        chunk.drop(
            field_ids.CC_OFFSET_INDEX,
            field_ids.CC_OFFSET_INDEX_LENGTH,
            field_ids.CC_COLUMN_INDEX,
            field_ids.CC_COLUMN_INDEX_LENGTH,
        )

    def close(self, key_value: dict[bytes, bytes] | None = None) -> int:
        """Write the page indexes and the footer (the template's, with our row groups and
        `key_value` set in its key-value metadata); returns the file's rows. One write: a
        slice of a rank pass has two small page indexes per column."""
        tail = bytearray()
        for held, (offset, length) in (
            (self.column_indexes, (field_ids.CC_COLUMN_INDEX, field_ids.CC_COLUMN_INDEX_LENGTH)),
            (self.offset_indexes, (field_ids.CC_OFFSET_INDEX, field_ids.CC_OFFSET_INDEX_LENGTH)),
        ):
            for chunk, blob in held:
                chunk.put(offset, I64, self.position + len(tail))
                chunk.put(length, I32, len(blob))
                tail += blob
        meta = self.template.meta.shallow()  # only its own fields are set
        meta.set(field_ids.FILE_SCHEMA, Raw(self.template.schema))  # encoded once per template
        meta.set(field_ids.FILE_ROW_GROUPS, (STRUCT, self.groups))
        meta.set(field_ids.FILE_NUM_ROWS, sum(g.get(field_ids.RG_NUM_ROWS) for g in self.groups))
        if key_value:
            _set_key_value(meta, key_value)
        start = len(tail)
        write_struct(tail, meta)
        tail += struct.pack("<I", len(tail) - start) + MAGIC
        self.sink.write(tail)
        self.position += len(tail)
        return int(meta.get(field_ids.FILE_NUM_ROWS))


def _own(group: Struct) -> Struct:
    """A copy of `group` that `_moved`, `_keep_indexes` and `close` may change: the row group,
    its column chunks and their metadata are copied, what none of them changes (statistics,
    encodings, paths) is shared. A deep copy of a mirror row group cost more than the rest of
    splicing it."""
    own = group.shallow()
    kind, chunks = own.get(field_ids.RG_COLUMNS)
    own.set(field_ids.RG_COLUMNS, (kind, [_own_chunk(chunk) for chunk in chunks]))
    return own


def _own_chunk(chunk: Struct) -> Struct:
    own = chunk.shallow()
    meta = own.get(field_ids.CC_META)
    if meta is not None:
        own.set(field_ids.CC_META, meta.shallow())
    return own


def _moved(group: Struct, delta: int, ordinal: int) -> Struct:
    """`group` changed in place to say its bytes moved by `delta`, without bloom filters (the
    caller places the page indexes)."""
    _shift(group, field_ids.RG_FILE_OFFSET, delta)
    if group.has(field_ids.RG_ORDINAL):
        group.set(field_ids.RG_ORDINAL, ordinal)
    for chunk in group.get(field_ids.RG_COLUMNS)[1]:
        _shift(chunk, field_ids.CC_FILE_OFFSET, delta)
        meta = chunk.get(field_ids.CC_META)
        for field_id in _PAGE_OFFSETS:
            if meta.get(field_id):  # some writers put 0 for "none"
                _shift(meta, field_id, delta)
        meta.drop(*field_ids.CM_DROPPED)
    return group


def _set_key_value(meta: Struct, entries: dict[bytes, bytes]) -> None:
    """Set `entries` in a FileMetaData's key-value metadata, replacing entries of those keys."""
    kept = [
        pair
        for pair in meta.get(field_ids.FILE_KEY_VALUE, (STRUCT, []))[1]
        if pair.get(field_ids.KV_KEY) not in entries
    ]
    added = [
        Struct([[field_ids.KV_KEY, BINARY, key], [field_ids.KV_VALUE, BINARY, value]])
        for key, value in entries.items()
    ]
    meta.put(field_ids.FILE_KEY_VALUE, LIST, (STRUCT, kept + added))


def _total(metas: list[Struct], field_id: int) -> int:
    return sum(int(meta.get(field_id)) for meta in metas)


def _shift(target: Struct, field_id: int, delta: int) -> None:
    if target.has(field_id):
        target.set(field_id, target.get(field_id) + delta)


def _blocks(footer: Footer, start: int, length: int, size: int = 8 << 20) -> Iterator[Any]:
    """Bytes [start, start + length) of `footer`'s file, in blocks of at most `size`."""
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

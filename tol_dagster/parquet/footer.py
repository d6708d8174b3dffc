"""A parquet file's footer, parsed at the byte level, and reads of the bytes it points to.

Why our own reader rather than pyarrow's `FileMetaData`: the splicer writes footers back and
the page reader follows page offsets, so both need every field as it is on the wire (pyarrow's
metadata cannot be changed or serialized field by field). Nothing read is trusted: a footer
we cannot splice or read by pages raises `SpliceError`, and callers fall back to pyarrow.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.file_versions import per_file_version
from tol_dagster.parquet.thrift import LIST, Shape, Struct, read_struct, write_value

MAGIC = b"PAR1"

#: A column chunk's statistics, which nothing here reads: most of a footer's fields after the
#: offsets.
_STATISTICS: Shape = {
    field_ids.CM_STATISTICS: None,
    field_ids.CM_ENCODING_STATS: None,
    field_ids.CM_SIZE_STATISTICS: None,
    field_ids.CM_GEOSPATIAL_STATISTICS: None,
}

#: The fields of a footer kept as wire bytes (`thrift.Raw`): skipping the statistics halves the
#: cost of parsing a footer and of writing one back (pure Python, on every slice written).
FOOTER_SHAPE: Shape = {
    field_ids.FILE_ROW_GROUPS: {
        field_ids.RG_COLUMNS: {field_ids.CC_META: _STATISTICS},
        field_ids.RG_SORTING_COLUMNS: None,
    },
    field_ids.FILE_COLUMN_ORDERS: None,
}

#: `FOOTER_SHAPE` for the footer of a row group just written in memory to splice its column
#: chunks into another file (`page_splice.whole_columns`): nothing reads its schema, its
#: key-value metadata or its columns' encodings, paths and key-value metadata, so they are
#: kept as wire bytes too (a fifth less to parse, once per row group a slice encodes).
SPLICED_ROWS_SHAPE: Shape = {
    **FOOTER_SHAPE,
    field_ids.FILE_SCHEMA: None,
    field_ids.FILE_KEY_VALUE: None,
    field_ids.FILE_ROW_GROUPS: {
        field_ids.RG_COLUMNS: {
            field_ids.CC_META: {
                **_STATISTICS,
                field_ids.CM_ENCODINGS: None,
                field_ids.CM_PATH: None,
                field_ids.CM_KEY_VALUE: None,
            }
        },
        field_ids.RG_SORTING_COLUMNS: None,
    },
}


class SpliceError(ValueError):
    """The files cannot be spliced (different schemas, encryption, scattered column chunks),
    or their pages cannot be read on their own (a damaged or unusual offset index)."""


@dataclass(frozen=True)
class Footer:
    """A parquet file's footer: its metadata, and where its bytes are (the file at `path`, or
    `data` for a file held in memory)."""

    path: Path
    meta: Struct
    data: Any = None

    @property
    def row_groups(self) -> list[Struct]:
        return self.meta.get(field_ids.FILE_ROW_GROUPS)[1]

    @functools.cached_property
    def schema(self) -> bytes:
        """The schema's wire bytes: equal bytes, identical physical schema. Kept once made (a
        rank pass compares the same footers' schemas for every slice; nothing changes one)."""
        out = bytearray()
        write_value(out, LIST, self.meta.get(field_ids.FILE_SCHEMA))
        return bytes(out)

    def has_offset_index(self, row_group: int) -> bool:
        chunks = self.row_groups[row_group].get(field_ids.RG_COLUMNS)[1]
        return all(c.has(field_ids.CC_OFFSET_INDEX) for c in chunks)

    def top_level_fields(self) -> list[tuple[str, list[Struct]]]:
        """(name, schema elements) of each top-level column, when each has one leaf."""
        elements = self.meta.get(field_ids.FILE_SCHEMA)[1]
        fields, position = [], 1
        for _ in range(elements[0].get(field_ids.SCHEMA_NUM_CHILDREN)):
            end, leaves = position + 1, 0
            pending = elements[position].get(field_ids.SCHEMA_NUM_CHILDREN, 0)
            leaves += pending == 0
            while pending:
                pending += elements[end].get(field_ids.SCHEMA_NUM_CHILDREN, 0) - 1
                leaves += not elements[end].get(field_ids.SCHEMA_NUM_CHILDREN, 0)
                end += 1
            if leaves != 1:
                raise SpliceError(f"{self.path}: column {position} has {leaves} leaves")
            fields.append(
                (elements[position].get(field_ids.SCHEMA_NAME).decode(), elements[position:end])
            )
            position = end
        return fields

    def byte_range(self, row_group: int) -> tuple[int, int]:
        """(start, length) of the row group's column chunks, which must be contiguous."""
        chunks = [
            c.get(field_ids.CC_META)
            for c in self.row_groups[row_group].get(field_ids.RG_COLUMNS)[1]
        ]
        starts = [chunk_start(m) for m in chunks]
        sizes = [m.get(field_ids.CM_TOTAL_COMPRESSED) for m in chunks]
        start, length = min(starts), sum(sizes)
        if max(s + n for s, n in zip(starts, sizes, strict=True)) - start != length:
            raise SpliceError(f"{self.path}: row group {row_group} is not one contiguous block")
        return start, length


@per_file_version(maxsize=256)
def read_footer(path: Path) -> Footer:
    """The parsed footer of the parquet file at `path`; SpliceError if we cannot splice it.

    Parsed once per file version (a slice asks several times; parsing is pure Python) and
    shared: treat it as read-only, copy a struct before changing it.
    """
    return parse_file_footer(path)


def parse_file_footer(path: Path) -> Footer:
    """The footer of the parquet file at `path`, parsed afresh: the caller's alone to change
    (`read_footer` shares its cached one)."""
    with open(path, "rb") as handle:
        handle.seek(-8, 2)
        tail = handle.read(8)
        length = struct.unpack("<I", tail[:4])[0]
        handle.seek(-8 - length, 2)
        return parse_footer(handle.read(length) + tail, path)


def parse_footer(tail: Any, path: Path, data: Any = None, shape: Shape = FOOTER_SHAPE) -> Footer:
    """Parse a footer from the last bytes of a parquet file (at least the whole footer); `data`
    is the whole file when it is held in memory (`tail` may be it); `shape`: the fields kept
    as wire bytes (`thrift.read_struct`)."""
    view = memoryview(tail).cast("B")  # pyarrow buffers export signed bytes
    size = struct.unpack("<I", view[-8:-4])[0]
    if view[-4:] != MAGIC or size + 8 > len(view):
        raise SpliceError(f"{path}: not a plain parquet file (encrypted or truncated)")
    meta, _ = parse_struct(view[-8 - size : -8], 0, path, shape)
    if any(meta.has(i) for i in field_ids.FILE_ENCRYPTION):
        raise SpliceError(f"{path}: encrypted footers are not spliced")
    if not all(
        meta.has(i)
        for i in (field_ids.FILE_SCHEMA, field_ids.FILE_NUM_ROWS, field_ids.FILE_ROW_GROUPS)
    ):
        raise SpliceError(f"{path}: damaged parquet metadata (no schema or row groups)")
    footer = Footer(path, meta, data)
    try:
        chunks = [c for group in footer.row_groups for c in group.get(field_ids.RG_COLUMNS)[1]]
        if any(
            c.has(field_ids.CC_FILE_PATH)
            or c.has(field_ids.CC_ENCRYPTION[0])
            or c.has(field_ids.CC_ENCRYPTION[1])
            for c in chunks
        ):
            raise SpliceError(f"{path}: column chunks in other files or encrypted")
    except (AttributeError, IndexError, TypeError) as error:
        raise SpliceError(f"{path}: damaged parquet metadata ({error!r})") from error
    return footer


def parse_struct(
    data: memoryview, pos: int, path: Path, shape: Shape | None = None
) -> tuple[Struct, int]:
    """A Thrift struct at `pos` (`shape`: see `thrift.read_struct`); SpliceError if the bytes
    are not one (a damaged file)."""
    try:
        parsed = read_struct(data, pos, shape)
    except (IndexError, KeyError, TypeError, ValueError, RecursionError, struct.error) as error:
        raise SpliceError(f"{path}: damaged parquet metadata ({error!r})") from error
    return parsed


def chunk_start(meta: Struct) -> int:
    """The first byte of a column chunk: its dictionary page if it has one, else its data."""
    data = int(meta.get(field_ids.CM_DATA_PAGE))
    dictionary = meta.get(field_ids.CM_DICTIONARY_PAGE)
    return min(data, dictionary) if dictionary else data


def read_bytes(footer: Footer, offset: int, length: int) -> bytes:
    """Bytes of `footer`'s file, wherever it is held."""
    if footer.data is not None:
        return bytes(memoryview(footer.data).cast("B")[offset : offset + length])
    with open(footer.path, "rb") as handle:
        return pread(handle, offset, length)


class LazyFile:
    """A file opened on first use: a read of pages a rank pass decoded already (most of its
    reads) opens nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None

    def __enter__(self) -> LazyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    @property
    def handle(self) -> BinaryIO:
        if self._handle is None:
            self._handle = open(self.path, "rb")  # noqa: SIM115 (closed by __exit__)
        return self._handle


def pread(handle: BinaryIO, offset: int, length: int) -> bytes:
    """Exactly `length` bytes at `offset`; SpliceError if the file ends before."""
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise SpliceError(f"{handle.name}: ends before byte {offset + length}")
    return data


def pread_into(handle: BinaryIO, offset: int, into: memoryview) -> None:
    """Fill `into` with the bytes at `offset` (read straight into it: no bytes object made on
    the way); SpliceError if the file ends before."""
    handle.seek(offset)
    if cast(io.BufferedIOBase, handle).readinto(into) != len(into):  # all binary files have it
        raise SpliceError(f"{handle.name}: ends before byte {offset + len(into)}")


def page_header(path: Path, handle: BinaryIO, offset: int, room: int) -> tuple[Struct, int]:
    """The page header at `offset` and its size in bytes; reads more until it parses whole."""
    want = 256
    while True:
        handle.seek(offset)
        data = handle.read(want)
        try:
            return read_struct(memoryview(data), 0)
        except (IndexError, struct.error) as error:
            if len(data) < want or want >= max(room, 1 << 20):
                raise SpliceError(f"{path}: no page header at byte {offset} ({error!r})") from error
            want *= 4
        except (KeyError, TypeError, ValueError, RecursionError) as error:
            raise SpliceError(f"{path}: no page header at byte {offset} ({error!r})") from error


def pread_struct(handle: BinaryIO, offset: int, length: int) -> Struct:
    """The Thrift struct in bytes [offset, offset + length) of the file."""
    return parse_struct(memoryview(pread(handle, offset, length)), 0, Path(handle.name))[0]

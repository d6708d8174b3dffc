"""A fixed-size list column of floats encoded as parquet data pages here, not by pyarrow
(`encode_list_column`): the inverse of `list_values`, for the column chunks a slice writes.

Why: pyarrow's writer builds `emb`'s nested levels value by value, about 6 µs a row of 768
halves: most of what writing a slice's encoded rows cost. The pages of non-NULL lists of
non-NULL floats need nothing of that: the repetition levels are one pattern per row (the bytes
Arrow's encoder writes, `list_values.repetition_pattern`), the definition levels one RLE run,
the values the array's bytes (PLAIN). The pages are data pages v1 of about `PAGE_BYTES` each,
with an offset index, no statistics, no dictionary (as our pyarrow writer made `emb`'s), and
the ColumnChunk holds ColumnMetaData's required fields only. Anything else (NULLs, a list size
the pattern does not cover, another type) gives None and pyarrow encodes the column.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.list_values import (
    PLAIN,
    RLE,
    float_list,
    reads_in_place,
    repetition_pattern,
)
from tol_dagster.parquet.splice import Column
from tol_dagster.parquet.thrift import (
    BINARY,
    I32,
    I64,
    LIST,
    STRUCT,
    Struct,
    write_struct,
    write_varint,
)

#: Values bytes per data page: pyarrow's default page size, so pages hold what pyarrow's would.
PAGE_BYTES = 1024 * 1024
#: Parquet's ids of the codecs written here, by pyarrow's name.
CODEC_IDS = {"none": 0, "zstd": 6}
#: The encodings of the pages written here, as pyarrow lists them: RLE levels, PLAIN values.
ENCODINGS = (RLE, PLAIN)


@dataclass(frozen=True)
class ListChunk:
    """What a column chunk of the list column needs besides its pages: its schema elements
    (`elements`: the list, its repeated group and its leaf) and the ZSTD level of its
    compressed pages."""

    elements: list[Struct]
    zstd_level: int


@dataclass(frozen=True)
class Pages:
    """Data pages of a list column: their bytes in parts (header, body, ...), offset index
    locations (offsets from the first page, rows from the first row), values, decompressed
    bytes (headers included) and bytes as written."""

    parts: list[bytes | memoryview]
    locations: list[Struct]
    values: int
    uncompressed: int
    size: int


def encode_list_column(
    values: pa.Array | pa.ChunkedArray, chunk: ListChunk, codec: str
) -> Column | None:
    """`values` (a fixed-size list array, one row group's rows) as a column chunk of data pages
    compressed with `codec` ('none' or 'zstd'), for `Splicer.add_columns`; None unless they are
    the plain regular case (the caller has pyarrow encode them)."""
    pages = encode_list_pages(values, chunk.elements, codec, chunk.zstd_level)
    if pages is None:
        return None
    return Column(
        list(pages.parts),
        _chunk(chunk.elements, codec, pages.values, pages.uncompressed, pages.size),
        Struct([[field_ids.PAGE_LOCATIONS, LIST, (STRUCT, pages.locations)]]),
        None,
    )


def encode_list_pages(
    values: pa.Array | pa.ChunkedArray, elements: list[Struct], codec: str, zstd_level: int
) -> Pages | None:
    """`values` as data pages v1 of the list column `elements` describe, compressed with
    `codec` ('none' or 'zstd', at `zstd_level`); None unless they are the plain regular case."""
    matrix = _matrix(values, elements)
    leaf = float_list(elements)
    if matrix is None or leaf is None or codec not in CODEC_IDS:
        return None
    rows, size = matrix.shape
    pattern = repetition_pattern(size)
    compressor = pa.Codec("zstd", compression_level=zstd_level) if codec == "zstd" else None
    page_rows = max(1, PAGE_BYTES // (size * matrix.dtype.itemsize))
    parts: list[bytes | memoryview] = []
    locations, offset, uncompressed = [], 0, 0
    for first in range(0, rows, page_rows):
        header, body, raw = _page(matrix[first : first + page_rows], pattern, leaf[1], compressor)
        written = len(header) + sum(len(part) for part in body)
        parts += [header, *body]
        locations.append(_location(offset, written, first))
        offset += written
        uncompressed += len(header) + raw
    return Pages(parts, locations, rows * size, uncompressed, offset)


def _matrix(values: pa.Array | pa.ChunkedArray, elements: list[Struct]) -> np.ndarray | None:
    """The rows of `values` as a (rows, size) array of the leaf's floats, zero-copy where
    they are one chunk; None unless every list and value is there and the pattern applies."""
    leaf = float_list(elements)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    kind = values.type
    if (
        leaf is None
        or not pa.types.is_fixed_size_list(kind)
        or not pa.types.is_floating(kind.value_type)
        or np.dtype(kind.value_type.to_pandas_dtype()) != leaf[0]
        or not reads_in_place(kind.list_size)
        or values.null_count
    ):
        return None
    flat = values.values.slice(values.offset * kind.list_size, len(values) * kind.list_size)
    if flat.null_count:
        return None
    width = leaf[0].itemsize
    data = flat.buffers()[1][flat.offset * width : (flat.offset + len(flat)) * width]
    return np.frombuffer(data, leaf[0]).reshape(len(values), kind.list_size)


def _page(
    rows: np.ndarray, pattern: bytes, max_def: int, compressor: pa.Codec | None
) -> tuple[bytes, list[bytes | memoryview], int]:
    """(header, body as written in parts, body's decompressed size) of a data page v1 of
    `rows`; uncompressed, the values are the array's own bytes, not a copy."""
    count = rows.size
    repetition = pattern * rows.shape[0]
    levels = bytearray(struct.pack("<I", len(repetition)))
    levels += repetition
    definition = bytearray()
    write_varint(definition, count << 1)
    definition.append(max_def)
    levels += struct.pack("<I", len(definition))
    levels += definition
    body: list[bytes | memoryview] = [bytes(levels), rows.data.cast("B")]
    raw = len(levels) + rows.nbytes
    if compressor is not None:
        body = [compressor.compress(b"".join(body), asbytes=True)]
    header = bytearray()
    write_struct(
        header,
        Struct(
            [
                [field_ids.HEADER_TYPE, I32, field_ids.DATA_PAGE],
                [field_ids.HEADER_UNCOMPRESSED, I32, raw],
                [field_ids.HEADER_COMPRESSED, I32, sum(len(part) for part in body)],
                [
                    field_ids.HEADER_DATA_V1,
                    STRUCT,
                    Struct(
                        [
                            [field_ids.DATA_NUM_VALUES, I32, count],
                            [field_ids.DATA_ENCODING, I32, PLAIN],
                            [field_ids.DATA_DEF_ENCODING, I32, RLE],
                            [field_ids.DATA_REP_ENCODING, I32, RLE],
                        ]
                    ),
                ],
            ]
        ),
    )
    return bytes(header), body, raw


def _location(offset: int, size: int, first_row: int) -> Struct:
    return Struct(
        [
            [field_ids.PAGE_OFFSET, I64, offset],
            [field_ids.PAGE_SIZE, I32, size],
            [field_ids.PAGE_FIRST_ROW, I64, first_row],
        ]
    )


def _chunk(elements: list[Struct], codec: str, values: int, uncompressed: int, size: int) -> Struct:
    """The ColumnChunk of these pages, every offset relative to the chunk's first byte: the
    fields a reader needs (ColumnMetaData's required ones), nothing that describes all the rows
    (statistics, page encoding stats, size statistics, indexes: optional)."""
    meta = Struct(
        [
            [field_ids.CM_TYPE, I32, elements[-1].get(field_ids.SCHEMA_TYPE)],
            [field_ids.CM_ENCODINGS, LIST, (I32, list(ENCODINGS))],
            [field_ids.CM_PATH, LIST, (BINARY, [e.get(field_ids.SCHEMA_NAME) for e in elements])],
            [field_ids.CM_CODEC, I32, CODEC_IDS[codec]],
            [field_ids.CM_NUM_VALUES, I64, values],
            [field_ids.CM_TOTAL_UNCOMPRESSED, I64, uncompressed],
            [field_ids.CM_TOTAL_COMPRESSED, I64, size],
            [field_ids.CM_DATA_PAGE, I64, 0],
        ]
    )
    return Struct([[field_ids.CC_FILE_OFFSET, I64, 0], [field_ids.CC_META, STRUCT, meta]])

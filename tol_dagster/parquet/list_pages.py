"""A fixed-size list column's values straight from its pages (`list_pages`): each data page
decompressed, its levels proven to be the regular pattern of non-NULL lists of non-NULL
values, and its values viewed in place as a (rows, size) numpy array.

Why: Arrow decodes `emb` (`fixed_size_list<halffloat>[768]`) by building nested lists and
their levels value by value, about 4x the cost of decompressing the same pages, and the gate
reads every byte of `emb` of every file. Only the plain regular case is read here: a NULL
anywhere, a dictionary, data pages v2, another encoding, levels encoded otherwise or any
disagreement with the footer raise `SpliceError`, and the caller decodes with pyarrow instead
(which then says what is wrong, if anything is).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import Footer, SpliceError, chunk_start, pread
from tol_dagster.parquet.pages import page_header
from tol_dagster.parquet.thrift import Struct, read_varint, write_varint

#: Parquet codecs (CompressionCodec) by pyarrow's codec name; 0 is uncompressed.
_CODECS = {1: "snappy", 2: "gzip", 4: "brotli", 6: "zstd", 7: "lz4_raw"}
#: SchemaElement fields, repetition types and physical types read here.
_TYPE, _TYPE_LENGTH, _REPETITION = 1, 2, 3
_REQUIRED, _REPEATED = 0, 2
_PHYSICAL = {4: np.dtype("<f4"), 5: np.dtype("<f8")}  # FLOAT, DOUBLE
_FIXED_LEN_BYTE_ARRAY = 7
#: DataPageHeader fields and the encodings accepted.
_ENCODING, _DEF_ENCODING, _REP_ENCODING = 2, 3, 4
_PLAIN, _RLE = 0, 3


def list_pages(footer: Footer, column: str, size: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Each data page of top-level column `column` (a list of `size` values of `dtype`) as a
    (rows, size) array of `dtype`, in file order, every row of the file exactly once.

    SpliceError as soon as anything is not the plain regular case (see the module); rows
    already yielded are then to be thrown away.
    """
    position = _column_position(footer, column)
    max_def = _max_definition_level(footer, column, dtype)
    with open(footer.path, "rb") as handle:
        for number, group in enumerate(footer.row_groups):
            chunk = group.get(field_ids.RG_COLUMNS)[1][position]
            rows = 0
            for page in _chunk_pages(footer.path, handle, chunk.get(field_ids.CC_META)):
                matrix = _page_values(footer.path, page, size, dtype, max_def)
                rows += matrix.shape[0]
                yield matrix
            if rows != group.get(field_ids.RG_NUM_ROWS):
                raise SpliceError(
                    f"{footer.path}: row group {number}'s {column} pages hold {rows} rows, not "
                    f"the {group.get(field_ids.RG_NUM_ROWS)} its footer says"
                )


def _column_position(footer: Footer, column: str) -> int:
    names = [name for name, _ in footer.top_level_fields()]
    if column not in names:
        raise SpliceError(f"{footer.path}: no column {column!r}")
    return names.index(column)


def _max_definition_level(footer: Footer, column: str, dtype: np.dtype) -> int:
    """The leaf's maximum definition level, after checking that the column is a list (an
    optional or required group, one repeated group, one leaf) of `dtype`-wide values."""
    elements = dict(footer.top_level_fields())[column]
    if len(elements) != 3 or elements[1].get(_REPETITION) != _REPEATED:
        raise SpliceError(f"{footer.path}: column {column!r} is not a list of one leaf")
    leaf = elements[2]
    physical = leaf.get(_TYPE)
    if not (
        (physical == _FIXED_LEN_BYTE_ARRAY and leaf.get(_TYPE_LENGTH) == dtype.itemsize)
        or _PHYSICAL.get(physical) == dtype
    ):
        raise SpliceError(f"{footer.path}: column {column!r} does not hold {dtype} values")
    return sum(element.get(_REPETITION) != _REQUIRED for element in elements)


def _chunk_pages(path: Path, handle: BinaryIO, meta: Struct) -> Iterator[tuple[Struct, pa.Buffer]]:
    """(DataPageHeader, decompressed body) of each data page of a column chunk without a dictionary,
    the pages ending exactly where the chunk does."""
    if meta.get(field_ids.CM_DICTIONARY_PAGE):
        raise SpliceError(f"{path}: a dictionary-encoded list column")
    codec_id = meta.get(field_ids.CM_CODEC)
    if codec_id != 0 and codec_id not in _CODECS:
        raise SpliceError(f"{path}: compression codec {codec_id}")
    codec = pa.Codec(_CODECS[codec_id]) if codec_id else None
    offset = chunk_start(meta)
    end = offset + int(meta.get(field_ids.CM_TOTAL_COMPRESSED))
    values = 0
    while offset < end:
        header, header_size = page_header(path, handle, offset, end - offset)
        compressed = header.get(field_ids.HEADER_COMPRESSED)
        uncompressed = header.get(field_ids.HEADER_UNCOMPRESSED)
        info = header.get(field_ids.HEADER_DATA_V1)
        if header.get(field_ids.HEADER_TYPE) != field_ids.DATA_PAGE or not (
            isinstance(info, Struct)
            and isinstance(info.get(field_ids.DATA_NUM_VALUES), int)
            and isinstance(compressed, int)
            and isinstance(uncompressed, int)
        ):
            raise SpliceError(f"{path}: a page of type {header.get(field_ids.HEADER_TYPE)}")
        offset += header_size
        body = pread(handle, offset, compressed)
        offset += compressed
        try:
            data = codec.decompress(body, uncompressed) if codec else pa.py_buffer(body)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise SpliceError(f"{path}: a page does not decompress ({error})") from error
        if data.size != uncompressed:
            raise SpliceError(f"{path}: a page decompresses to {data.size} bytes")
        values += info.get(field_ids.DATA_NUM_VALUES)
        yield info, data
    if offset != end or values != meta.get(field_ids.CM_NUM_VALUES):
        raise SpliceError(f"{path}: a column chunk's pages do not add up to its metadata")


def _page_values(
    path: Path, page: tuple[Struct, pa.Buffer], size: int, dtype: np.dtype, max_def: int
) -> np.ndarray:
    """One data page v1 (its DataPageHeader, its decompressed body) as (rows, size), its
    levels checked to be regular lists."""
    info, data = page
    count = info.get(field_ids.DATA_NUM_VALUES)
    if (
        info.get(_ENCODING) != _PLAIN
        or info.get(_DEF_ENCODING) != _RLE
        or info.get(_REP_ENCODING) != _RLE
        or count % size
    ):
        raise SpliceError(f"{path}: a page not PLAIN with RLE levels of whole lists")
    view = memoryview(data).cast("B")
    repetition, position = _levels_section(path, view, 0)
    if repetition != _repetition_pattern(size) * (count // size):
        raise SpliceError(f"{path}: a page's lists are not all {size} values long")
    definition, position = _levels_section(path, view, position)
    _check_all_at(path, definition, max_def, count)
    if len(view) - position != count * dtype.itemsize:
        raise SpliceError(f"{path}: a page holds {len(view) - position} bytes of values")
    return np.frombuffer(data, dtype, count=count, offset=position).reshape(-1, size)


def _levels_section(path: Path, view: memoryview, position: int) -> tuple[memoryview, int]:
    """A data page v1's length-prefixed levels and the position after them."""
    if position + 4 > len(view):
        raise SpliceError(f"{path}: a page ends inside its levels")
    length = struct.unpack_from("<I", view, position)[0]
    start = position + 4
    if start + length > len(view):
        raise SpliceError(f"{path}: a page's levels run past its end")
    return view[start : start + length], start + length


def _repetition_pattern(size: int) -> bytes:
    """The repetition levels of one list of `size` values (0 then `size` - 1 ones) as Arrow's
    RLE/bit-packed encoder writes them with bit width 1 when `size` is a multiple of 8: the
    first eight levels bit-packed (one group), the rest one run of ones. Every row of a page
    is encoded alike, so a page of n rows is this pattern n times."""
    if size % 8 or size < 16:
        raise SpliceError(f"lists of {size} values are read by pyarrow")
    out = bytearray([0x03, 0xFE])
    write_varint(out, (size - 8) << 1)
    return bytes(out + b"\x01")


def _check_all_at(path: Path, levels: memoryview, level: int, count: int) -> None:
    """The definition levels are RLE runs of `level` only (no NULL anywhere), `count` in all."""
    width = (level.bit_length() + 7) // 8
    position = total = 0
    while position < len(levels):
        try:
            run, position = read_varint(levels, position)
        except IndexError as error:
            raise SpliceError(f"{path}: a page's levels end inside a run header") from error
        value = int.from_bytes(levels[position : position + width], "little")
        position += width
        if run & 1 or value != level:
            raise SpliceError(f"{path}: a page holds NULLs or levels not in RLE runs")
        total += run >> 1
    if position != len(levels) or total != count:
        raise SpliceError(f"{path}: a page's definition levels count {total}, not {count}")

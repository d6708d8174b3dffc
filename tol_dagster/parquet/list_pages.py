"""A fixed-size list column's values straight from its pages (`list_pages`): each data page
decompressed, its levels proven to be the regular pattern of non-NULL lists of non-NULL
values, and its values viewed in place as a (rows, size) numpy array.

Why: Arrow decodes `emb` (`fixed_size_list<halffloat>[768]`) by building nested lists and
their levels value by value, about 3x the cost of decompressing the same pages, and the gate
reads every byte of `emb` of every file. Only the plain regular case is read here: a NULL
anywhere, a dictionary, data pages v2, another encoding, levels encoded otherwise or any
disagreement with the footer raise `SpliceError`, and the caller decodes with pyarrow instead
(which then says what is wrong, if anything is).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import SpliceError, pread
from tol_dagster.parquet.pages import page_header
from tol_dagster.parquet.thrift import Struct, read_varint, write_varint

#: Parquet codecs by the names pyarrow's metadata gives them and its codec names. Not "LZ4":
#: pyarrow names both LZ4 framings so, and they decompress differently.
_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd"}
#: Physical types that hold floats of a numpy dtype (FIXED_LEN_BYTE_ARRAY by its length).
_PHYSICAL = {"FLOAT": np.dtype("<f4"), "DOUBLE": np.dtype("<f8")}
#: A bound on a page's decompressed bytes per value (a float64 and its levels), checked before
#: decompressing: a header may not make us allocate what its values cannot fill.
_MAX_BYTES_PER_VALUE = 9
#: DataPageHeader fields and the encodings accepted.
_ENCODING, _DEF_ENCODING, _REP_ENCODING = 2, 3, 4
_PLAIN, _RLE = 0, 3


def list_pages(
    path: Path,
    metadata: pq.FileMetaData,
    column: str,
    size: int,
    dtype: np.dtype,
    row_groups: Sequence[int] | None = None,
) -> Iterator[np.ndarray]:
    """Each data page of top-level column `column` of the file at `path` (its footer as
    pyarrow parsed it: no second parse here) as a (rows, `size`) array of `dtype`, in file
    order, every row of the file (of `row_groups`, when given) exactly once.

    SpliceError as soon as anything is not the plain regular case (see the module); rows
    already yielded are then to be thrown away.
    """
    leaf, max_def = _leaf(path, metadata, column, dtype)
    numbers = range(metadata.num_row_groups) if row_groups is None else row_groups
    with open(path, "rb") as handle:
        for number in numbers:
            group = metadata.row_group(number)
            rows = 0
            for page in _chunk_pages(path, handle, group.column(leaf)):
                matrix = _page_values(path, page, size, dtype, max_def)
                rows += matrix.shape[0]
                yield matrix
            if rows != group.num_rows:
                raise SpliceError(
                    f"{path}: row group {number}'s {column} pages hold {rows} rows, not the "
                    f"{group.num_rows} its footer says"
                )


def _leaf(path: Path, metadata: pq.FileMetaData, column: str, dtype: np.dtype) -> tuple[int, int]:
    """The leaf column of list `column` (`column`.list.element: one repeated level) and its
    maximum definition level, after checking it holds `dtype`-wide floats."""
    schema = metadata.schema
    leaves = [i for i in range(len(schema)) if schema.column(i).path.split(".")[0] == column]
    if len(leaves) != 1:
        raise SpliceError(f"{path}: column {column!r} is not a list of one leaf")
    leaf = schema.column(leaves[0])
    physical = leaf.physical_type
    if (
        len(leaf.path.split(".")) != 3
        or leaf.max_repetition_level != 1
        or not (
            (physical == "FIXED_LEN_BYTE_ARRAY" and leaf.length == dtype.itemsize)
            or _PHYSICAL.get(physical) == dtype
        )
    ):
        raise SpliceError(f"{path}: column {column!r} is not a list of {dtype} values")
    return leaves[0], leaf.max_definition_level


def _chunk_pages(
    path: Path, handle: BinaryIO, chunk: pq.ColumnChunkMetaData
) -> Iterator[tuple[Struct, pa.Buffer]]:
    """(DataPageHeader, decompressed body) of each data page of a column chunk without a
    dictionary, the pages ending exactly where the chunk does."""
    if chunk.has_dictionary_page or chunk.dictionary_page_offset:
        raise SpliceError(f"{path}: a dictionary-encoded list column")
    if chunk.compression != "UNCOMPRESSED" and chunk.compression not in _CODECS:
        raise SpliceError(f"{path}: compression {chunk.compression}")
    codec = pa.Codec(_CODECS[chunk.compression]) if chunk.compression in _CODECS else None
    offset = chunk.data_page_offset
    end = offset + chunk.total_compressed_size
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
        count = info.get(field_ids.DATA_NUM_VALUES)
        if not (
            0 <= compressed <= end - offset
            and 0 <= count <= chunk.num_values - values
            and 0 <= uncompressed <= _MAX_BYTES_PER_VALUE * count + 64
        ):
            raise SpliceError(f"{path}: a page header whose sizes do not fit its column chunk")
        body = pread(handle, offset, compressed)
        offset += compressed
        try:
            data = codec.decompress(body, uncompressed) if codec else pa.py_buffer(body)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise SpliceError(f"{path}: a page does not decompress ({error})") from error
        if data.size != uncompressed:
            raise SpliceError(f"{path}: a page decompresses to {data.size} bytes")
        values += count
        yield info, data
    if offset != end or values != chunk.num_values:
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

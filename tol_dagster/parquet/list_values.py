"""A fixed-size list column's data pages read in place: each page decompressed, its levels
proven to be the regular pattern of non-NULL lists of non-NULL values, and its values viewed
as a (rows, size) numpy array (`page_values`); `regular_list_column` does it for pages already
in memory.

Why: Arrow decodes `emb` (`fixed_size_list<halffloat>[768]`) by building nested lists and
their levels value by value, about ten times the cost of decompressing the same pages. Only
the plain regular case is read here: a NULL anywhere, a dictionary, data pages v2, another
encoding, levels encoded otherwise or any disagreement with the headers raise `SpliceError`
(or give None), and the caller decodes with pyarrow instead (which then says what is wrong,
if anything is).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import SpliceError, parse_struct
from tol_dagster.parquet.thrift import Struct, read_varint, write_varint

#: A bound on a page's decompressed bytes per value (a float64 and its levels), checked before
#: decompressing: a header may not make us allocate what its values cannot fill.
_MAX_BYTES_PER_VALUE = 9
#: The encodings accepted.
PLAIN, RLE = 0, 3
#: ColumnMetaData's codec ids that pyarrow decompresses under these names (not LZ4: two framings).
_CODECS = {0: None, 1: "snappy", 2: "gzip", 4: "brotli", 6: "zstd"}
#: SchemaElement fields, and the values of them read here.
_TYPE, _TYPE_LENGTH, _REPETITION, _LOGICAL = 1, 2, 3, 10
_FLOAT, _DOUBLE, _FIXED_LEN = 4, 5, 7
_REQUIRED, _REPEATED = 0, 2
#: Physical types of floats (FIXED_LEN_BYTE_ARRAY of 2 bytes is float16 by its logical type).
_FLOATS: dict[int, np.dtype] = {_FLOAT: np.dtype("<f4"), _DOUBLE: np.dtype("<f8")}
_LOGICAL_FLOAT16 = 15


def decompressed(
    path: Path, header: Struct, body: bytes | memoryview, codec: pa.Codec | None, room: int
) -> tuple[Struct, pa.Buffer]:
    """(DataPageHeader, decompressed body) of a data page v1 whose header is `header` and whose
    compressed bytes are `body`, holding at most `room` values."""
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
    count = info.get(field_ids.DATA_NUM_VALUES)
    if not (
        compressed == len(body)
        and 0 <= count <= room
        and 0 <= uncompressed <= _MAX_BYTES_PER_VALUE * count + 64
    ):
        raise SpliceError(f"{path}: a page header whose sizes do not fit its column chunk")
    try:
        data = codec.decompress(body, uncompressed) if codec else pa.py_buffer(body)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise SpliceError(f"{path}: a page does not decompress ({error})") from error
    if data.size != uncompressed:
        raise SpliceError(f"{path}: a page decompresses to {data.size} bytes")
    return info, data


def page_values(
    path: Path, page: tuple[Struct, pa.Buffer], size: int, dtype: np.dtype, max_def: int
) -> np.ndarray:
    """One data page v1 (its DataPageHeader, its decompressed body) as (rows, size), its
    levels checked to be regular lists."""
    info, data = page
    count = info.get(field_ids.DATA_NUM_VALUES)
    if (
        info.get(field_ids.DATA_ENCODING) != PLAIN
        or info.get(field_ids.DATA_DEF_ENCODING) != RLE
        or info.get(field_ids.DATA_REP_ENCODING) != RLE
        or count % size
    ):
        raise SpliceError(f"{path}: a page not PLAIN with RLE levels of whole lists")
    view = memoryview(data).cast("B")
    repetition, position = _levels_section(path, view, 0)
    if repetition != repetition_pattern(size) * (count // size):
        raise SpliceError(f"{path}: a page's lists are not all {size} values long")
    definition, position = _levels_section(path, view, position)
    _check_all_at(path, definition, max_def, count)
    if len(view) - position != count * dtype.itemsize:
        raise SpliceError(f"{path}: a page holds {len(view) - position} bytes of values")
    return np.frombuffer(data, dtype, count=count, offset=position).reshape(-1, size)


def regular_list_column(
    path: Path, elements: list[Struct], codec: int, pages: memoryview, page_rows: Sequence[int]
) -> pa.Array | None:
    """Consecutive data pages `pages` of the column `elements` describe (compressed by parquet
    codec `codec`, holding `page_rows` rows each) as a fixed-size list array of their floats;
    None unless they are all the plain regular case (the caller decodes with pyarrow)."""
    leaf = float_list(elements)
    if leaf is None or codec not in _CODECS:
        return None
    dtype, max_def = leaf
    decompressor = pa.Codec(_CODECS[codec]) if _CODECS[codec] else None
    matrices, position, size = [], 0, 0
    try:
        for rows in page_rows:
            header, start = parse_struct(pages, position, path)
            position = start + int(header.get(field_ids.HEADER_COMPRESSED) or 0)
            page = decompressed(path, header, pages[start:position], decompressor, 1 << 31)
            size = size or page[0].get(field_ids.DATA_NUM_VALUES) // max(rows, 1)
            matrices.append(page_values(path, page, size, dtype, max_def))
            if matrices[-1].shape[0] != rows:
                return None
    except SpliceError:
        return None
    if position != len(pages) or not matrices:
        return None
    values = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)


def float_list(elements: list[Struct]) -> tuple[np.dtype, int] | None:
    """(dtype, max definition level) of a list column of one repeated level of floats (the
    three schema elements of `emb`), else None."""
    if len(elements) != 3 or elements[2].get(field_ids.SCHEMA_NUM_CHILDREN):
        return None
    repetitions = [element.get(_REPETITION, _REQUIRED) for element in elements]
    if repetitions.count(_REPEATED) != 1 or repetitions[2] == _REPEATED:
        return None
    leaf = elements[2]
    logical = leaf.get(_LOGICAL)
    dtype = _FLOATS.get(leaf.get(_TYPE))
    if (leaf.get(_TYPE), leaf.get(_TYPE_LENGTH)) == (_FIXED_LEN, 2) and isinstance(logical, Struct):
        dtype = np.dtype("<f2") if logical.has(_LOGICAL_FLOAT16) else None
    if dtype is None:
        return None
    return dtype, sum(repetition != _REQUIRED for repetition in repetitions)


def _levels_section(path: Path, view: memoryview, position: int) -> tuple[memoryview, int]:
    """A data page v1's length-prefixed levels and the position after them."""
    if position + 4 > len(view):
        raise SpliceError(f"{path}: a page ends inside its levels")
    length = struct.unpack_from("<I", view, position)[0]
    start = position + 4
    if start + length > len(view):
        raise SpliceError(f"{path}: a page's levels run past its end")
    return view[start : start + length], start + length


def reads_in_place(size: int) -> bool:
    """Whether pages of lists of `size` values can be read in place (and written by
    `list_encode`): only their repetition levels' one layout is known (`repetition_pattern`);
    any other size fails on every page."""
    return size % 8 == 0 and size >= 16


def repetition_pattern(size: int) -> bytes:
    """The repetition levels of one list of `size` values (0 then `size` - 1 ones) as Arrow's
    RLE/bit-packed encoder writes them with bit width 1 when `size` is a multiple of 8: the
    first eight levels bit-packed (one group), the rest one run of ones. Every row of a page
    is encoded alike, so a page of n rows is this pattern n times."""
    if not reads_in_place(size):
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

"""A fixed-size list column's values straight from its pages (`list_pages`), file by file: each
data page read, decompressed and viewed in place (`list_values.page_values`) as a (rows, size)
numpy array.

Why: the gate reads every byte of `emb` of every file, and Arrow's decoding of nested lists
costs several times the decompression (see `list_values`). Anything but the plain regular case
raises `SpliceError`, and the caller decodes with pyarrow instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import SpliceError, page_header, pread
from tol_dagster.parquet.list_values import decompressed, page_values
from tol_dagster.parquet.thrift import Struct

#: Parquet codecs by the names pyarrow's metadata gives them and its codec names. Not "LZ4":
#: pyarrow names both LZ4 framings so, and they decompress differently.
_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd"}
#: Physical types that hold floats of a numpy dtype (FIXED_LEN_BYTE_ARRAY by its length).
_PHYSICAL = {"FLOAT": np.dtype("<f4"), "DOUBLE": np.dtype("<f8")}


def list_pages(
    path: Path,
    metadata: pq.FileMetaData,
    column: str,
    size: int,
    dtype: np.dtype,
    row_groups: Sequence[int] | None = None,
    handle: BinaryIO | None = None,
) -> Iterator[np.ndarray]:
    """Each data page of top-level column `column` of the file at `path` (its footer as
    pyarrow parsed it: no second parse here) as a (rows, `size`) array of `dtype`, in file
    order, every row of the file (of `row_groups`, when given) exactly once.

    SpliceError as soon as anything is not the plain regular case (see the module); rows
    already yielded are then to be thrown away. `handle`: the file opened by the caller (left
    open), for one that hashes what is read (`store.hashing.HashingFile`).
    """
    leaf, max_def = _leaf(path, metadata, column, dtype)
    numbers = range(metadata.num_row_groups) if row_groups is None else row_groups
    with nullcontext(handle) if handle is not None else open(path, "rb") as opened:
        for number in numbers:
            group = metadata.row_group(number)
            rows = 0
            for page in _chunk_pages(path, opened, group.column(leaf)):
                matrix = page_values(path, page, size, dtype, max_def)
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
        offset += header_size
        compressed = header.get(field_ids.HEADER_COMPRESSED)
        if not isinstance(compressed, int) or not 0 <= compressed <= end - offset:
            raise SpliceError(f"{path}: a page header whose sizes do not fit its column chunk")
        body = pread(handle, offset, compressed)
        offset += compressed
        page = decompressed(path, header, body, codec, chunk.num_values - values)
        values += page[0].get(field_ids.DATA_NUM_VALUES)
        yield page
    if offset != end or values != chunk.num_values:
        raise SpliceError(f"{path}: a column chunk's pages do not add up to its metadata")

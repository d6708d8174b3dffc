"""A 64-bit digest of every row's `emb` bytes, and the per-file table of them the gate keeps.

"finite" alone let a byte flipped inside an `emb` page through (a value moved from 2.09 to
82.5). Each validated file keeps, under `Layout.derived_dir(config, sha256)`, its rows' uuid
hashes (DuckDB's, as `uuid_index`) sorted, each with the digest of the row's `emb` bytes and the
row's place in the file. The digests are computed in the gate's one pass over `emb` (vectorised,
~5 ms per 10k rows); `emb_unchanged` compares them across generations and the slice checks look
a slice's rows up in them.

The digest is a multilinear hash: sum over the row's 32-bit words w_k of m_k * w_k mod 2**64,
with fixed odd multipliers m_k (splitmix64 of k, so it never depends on a library's random
stream). Changing any one word by d != 0 (any single bit flip, any one value) changes the digest
by m_k * d != 0 mod 2**64, so such a change is always seen; changes to several words cancel out
with probability about 2**-32.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet.list_pages import list_pages
from tol_dagster.parquet.list_values import reads_in_place
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import derived_path
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile, verify_unchanged
from tol_dagster.validation.uuid_index import stable_order, uuid_row_hashes

#: The digest's definition (v1: multilinear over 32-bit words) and DuckDB's uuid hash version.
#: v2: rows are (uuid hash, digest, row in the file); a NULL `emb` has its own digest.
DIGESTS_NAME = f"emb_digests.v2.duckdb-{duckdb.__version__}.npy"

#: The digest of a NULL `emb` (a zero vector's digest is 0).
NULL_DIGEST = np.uint64(2**64 - 1)

#: Rows decoded at once when digests are computed outside the gate's pass.
BATCH_ROWS = 10_000


# --- per row ---------------------------------------------------------------------------------


def float_list_dtype(emb_type: pa.DataType) -> np.dtype | None:
    """The numpy dtype of a `fixed_size_list<float>`'s values; None for any other type."""
    if not pa.types.is_fixed_size_list(emb_type) or not pa.types.is_floating(emb_type.value_type):
        return None
    return np.dtype(emb_type.value_type.to_pandas_dtype())


def emb_pages(
    path: Path,
    parquet: pq.ParquetFile,
    row_groups: Sequence[int] | None = None,
    handle: BinaryIO | None = None,
) -> Iterator[np.ndarray] | None:
    """`emb`'s rows page by page as (rows, dim), read in place (`parquet.list_pages`) from the
    file at `path` (of `row_groups`, when given; through `handle`, when given); None when `emb`
    is not a fixed-size list of floats, or of a width whose pages are not read in place
    (`list_values.reads_in_place`). SpliceError while iterating: not the plain case, read it
    with pyarrow instead."""
    emb_type = parquet.schema_arrow.field("emb").type
    dtype = float_list_dtype(emb_type)
    if dtype is None or not reads_in_place(emb_type.list_size):
        return None
    return list_pages(path, parquet.metadata, "emb", emb_type.list_size, dtype, row_groups, handle)


def emb_matrix(emb: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The rows of a `fixed_size_list<float>` array as a (rows, dim) numpy view, zero-copy.

    None when `emb` is not a fixed-size list of floats (the schema check reports that file).
    Rows that are NULL hold whatever the buffer holds: mask them with `emb.is_valid()`.
    """
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    dtype = float_list_dtype(emb.type)
    if dtype is None:
        return None
    dim = emb.type.list_size
    if len(emb) == 0 or dim == 0:
        return np.empty((len(emb), dim), dtype)
    child = emb.values  # the whole child: `emb.offset` is not applied to it
    start = (child.offset + emb.offset * dim) * dtype.itemsize
    flat = np.frombuffer(child.buffers()[1], dtype, count=len(emb) * dim, offset=start)
    return flat.reshape(len(emb), dim)


@functools.lru_cache(maxsize=8)
def _multipliers(count: int) -> np.ndarray:
    """`count` fixed odd 64-bit multipliers: splitmix64 of 1..count, lowest bit set."""
    with np.errstate(over="ignore"):
        z = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).astype(
            np.uint64
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z | np.uint64(1)


def row_digests(matrix: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A uint64 digest of each row's bytes (see the module's docstring); NULL rows get
    `NULL_DIGEST`, so a NULL never passes for a vector of zeros."""
    rows = matrix.shape[0]
    width = matrix.shape[1] * matrix.dtype.itemsize if matrix.ndim == 2 else 0
    if rows == 0 or width == 0:
        digests = np.zeros(rows, np.uint64)
        if valid is not None:
            digests[~valid] = NULL_DIGEST
        return digests
    words = np.ascontiguousarray(matrix).view(np.uint32 if width % 4 == 0 else np.uint16)
    with np.errstate(over="ignore"):
        # einsum multiplies and sums in uint64 without first widening every word (2x faster)
        digests = np.einsum(
            "ij,j->i", words, _multipliers(words.shape[1]), dtype=np.uint64, casting="unsafe"
        )
    if valid is not None and not valid.all():
        digests[~valid] = NULL_DIGEST
    return digests


# --- per file: the cached (uuid hash, digest, row) table ---------------------------------------


def digests_path(layout: Layout, config: str, file: MirrorFile) -> Path:
    """Where the (uuid hash, emb digest) table of `file` (by its sha256) is kept."""
    return derived_path(layout, config, file, DIGESTS_NAME)


def digest_table(row_hashes: np.ndarray, uuid_valid: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """A (3, rows) uint64 array: the non-NULL uuids' hashes sorted, each row's digest and its
    row in the file below (the slice check finds a slice row's place in the mirror by it)."""
    rows = np.flatnonzero(uuid_valid).astype(np.uint64)
    hashes, values = row_hashes[uuid_valid], digests[uuid_valid]
    order = stable_order(hashes)
    return np.stack([hashes[order], values[order], rows[order]])


def save_table(path: Path, table: np.ndarray, *, sync_dir: bool = True) -> None:
    """Write a digest table atomically (readers never see half of one); `sync_dir` as for
    `atomic_path`."""
    with atomic_path(path, sync_dir=sync_dir) as temp, open(temp, "wb") as handle:
        np.save(handle, table, allow_pickle=False)


def compute_table(path: Path) -> np.ndarray:
    """The digest table of the parquet file at `path`, read in batches (uuid and emb only)."""
    parquet = pq.ParquetFile(path)
    hashes, valid, digests = [], [], []
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["uuid", "emb"]):
        uuids, emb = batch.column(0), batch.column(1)
        matrix = emb_matrix(emb)
        if matrix is None:
            raise ValueError(f"{path}: 'emb' is {emb.type}, not a fixed-size list of floats")
        hashes.append(uuid_row_hashes(uuids))
        valid.append(uuids.is_valid().to_numpy(zero_copy_only=False))
        digests.append(row_digests(matrix, emb.is_valid().to_numpy(zero_copy_only=False)))
    if not hashes:
        return np.empty((3, 0), np.uint64)
    return digest_table(np.concatenate(hashes), np.concatenate(valid), np.concatenate(digests))


def ensure_table(file: MirrorFile, layout: Layout, config: str) -> bool:
    """Make sure `file`'s digest table is cached (e.g. validated by an older version); True if
    it had to be computed."""
    path = digests_path(layout, config, file)
    if path.is_file():
        return False
    verify_unchanged(file)
    save_table(path, compute_table(file.path))
    return True

"""A slice's uuid hashes, read once for the two checks that need them: the `emb` check places
each row in the mirror by its hash, and `uuids_unique` is told from the same hashes (distinct
hashes are distinct uuids; equal ones are confirmed on the uuids themselves). Counting distinct
uuids in DuckDB instead was most of a small slice's key-and-uuid query (1 of 2 ms).

Only the hashes and which uuids are NULL are kept, one array each, ~9 bytes a row: the uuid
strings (~80 bytes a row as Arrow holds them) made a slice's checks grow with its rows, ~10 GB
for the real `kingdom=Animalia` (112M rows). A uuid a message names is read again (`uuid_at`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.validation.uuid_index import uuid_row_hashes

#: Rows whose uuid strings `read_slice_uuids` holds at once, to hash them.
HASHED_ROWS = 1_000_000


@dataclass(frozen=True)
class RowGroupUuids:
    """One row group's uuid hashes (NULL rows hashed too) and whether each uuid is not NULL."""

    hashes: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class SliceUuids:
    """A slice's uuid hashes and non-NULL flags in row order, one array each, and its row
    groups' sizes."""

    hashes: np.ndarray
    valid: np.ndarray
    sizes: list[int]

    @classmethod
    def of(cls, uuids: pa.Array | pa.ChunkedArray, sizes: list[int] | None = None) -> SliceUuids:
        """The hashes of `uuids` (row groups of `sizes` rows; one without), as the checks'
        DuckDB query computes them."""
        valid = np.asarray(uuids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return cls(uuid_row_hashes(uuids), valid, [len(uuids)] if sizes is None else sizes)

    def groups(self) -> Iterator[RowGroupUuids]:
        """Each row group's part of the arrays (views, not copies)."""
        for start, stop in itertools.pairwise([0, *itertools.accumulate(self.sizes)]):
            yield RowGroupUuids(self.hashes[start:stop], self.valid[start:stop])


def read_slice_uuids(written: pq.ParquetFile) -> SliceUuids:
    """The uuids as pyarrow reads them, hashed in one query per HASHED_ROWS rows (each costs
    ~0.7 ms however few the uuids). The blocking checks take the hashes from their key query
    instead (`checks.slice_checks`); this reads them for the `emb` check alone, and when that
    query's rows do not add up to the footer's."""
    sizes = [written.metadata.row_group(g).num_rows for g in range(written.num_row_groups)]
    hashes, valid = np.empty(sum(sizes), np.uint64), np.empty(sum(sizes), bool)
    start = 0
    for batch in _batches(sizes):
        hashed = SliceUuids.of(
            pa.chunked_array([row_group_column(written, g, "uuid") for g in batch])
        )
        stop = start + hashed.hashes.size
        hashes[start:stop], valid[start:stop] = hashed.hashes, hashed.valid
        start = stop
    return SliceUuids(hashes, valid, sizes)


def _batches(sizes: list[int]) -> Iterator[list[int]]:
    """The row groups of `sizes` rows in runs of about HASHED_ROWS rows (a larger one alone)."""
    batch: list[int] = []
    rows = 0
    for group, size in enumerate(sizes):
        if batch and rows + size > HASHED_ROWS:
            yield batch
            batch, rows = [], 0
        batch.append(group)
        rows += size
    if batch:
        yield batch


def row_group_column(written: pq.ParquetFile, group: int, name: str) -> pa.Array:
    """One column of one row group, decoded in this thread: a row group at a time bounds the
    memory (~25 MB of `emb` for a row group we wrote, 77 MB for one copied from the mirror),
    and reading it whole decodes 3x faster than a streaming reader with small buffers."""
    column = written.read_row_group(group, columns=[name], use_threads=False).column(0)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # no copy


def uuid_at(written: pq.ParquetFile, group: int, row: int) -> str | None:
    """The uuid at `row` of row group `group`, read again to name it in a check's message;
    None when it does not read (a damaged file)."""
    try:
        value = row_group_column(written, group, "uuid")[row].as_py()
    except (pa.ArrowException, OSError, IndexError):
        return None
    return None if value is None else str(value)


def may_repeat(uuids: SliceUuids) -> bool:
    """False when no uuid can appear twice: the hashes of the uuids all differ and at most one
    uuid is NULL (NULL is one uuid, as GROUP BY groups it). True asks for the uuids themselves
    to be compared (two uuids may share a hash, a NULL's with another's too).

    Sorts `uuids.hashes` in place, without a copy (8 bytes a row of a slice that may hold
    100M): call it after every check that reads them in row order."""
    nulls = uuids.valid.size - int(np.count_nonzero(uuids.valid))
    if nulls > 1:
        return True
    uuids.hashes.sort()
    return bool((uuids.hashes[1:] == uuids.hashes[:-1]).any())

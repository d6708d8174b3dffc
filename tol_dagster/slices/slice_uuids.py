"""A slice's uuid hashes, read once for the two checks that need them: the `emb` check places
each row in the mirror by its hash, and `uuids_unique` is told from the same hashes (distinct
hashes are distinct uuids; equal ones are confirmed on the uuids themselves). Counting distinct
uuids in DuckDB instead was most of a small slice's key-and-uuid query (1 of 2 ms).

Only the hashes and which uuids are NULL are kept, ~9 bytes a row: the uuid strings (~80 bytes
a row as Arrow holds them) made a slice's checks grow with its rows, ~9 GB for the real
`kingdom=Animalia` (112M rows). A uuid a message names is read again (`uuid_at`).
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

    @classmethod
    def of(cls, uuids: pa.Array | pa.ChunkedArray) -> RowGroupUuids:
        """The hashes of `uuids`, as the checks' DuckDB query computes them."""
        valid = np.asarray(uuids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return cls(uuid_row_hashes(uuids), valid)


def read_slice_uuids(written: pq.ParquetFile) -> list[RowGroupUuids]:
    """Each row group's uuids as pyarrow reads them, hashed in one query per HASHED_ROWS rows
    (each costs ~0.7 ms however few the uuids). The blocking checks take the hashes from their
    key query instead (`checks.slice_checks`); this reads them for the `emb` check alone, and
    when that query's rows do not add up to the footer's."""
    groups: list[RowGroupUuids] = []
    for batch in _batches(written):
        columns = [row_group_column(written, g, "uuid") for g in batch]
        hashed = RowGroupUuids.of(pa.chunked_array(columns, pa.string()))
        ends = np.cumsum([len(column) for column in columns])[:-1]
        groups += [
            RowGroupUuids(hashes, valid)
            for hashes, valid in zip(
                np.split(hashed.hashes, ends), np.split(hashed.valid, ends), strict=True
            )
        ]
    return groups


def _batches(written: pq.ParquetFile) -> Iterator[list[int]]:
    """The file's row groups in runs of about HASHED_ROWS rows (a larger one alone)."""
    batch: list[int] = []
    rows = 0
    for group in range(written.num_row_groups):
        size = written.metadata.row_group(group).num_rows
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


def may_repeat(groups: list[RowGroupUuids]) -> bool:
    """False when no uuid can appear twice: the hashes of the non-NULL uuids all differ and at
    most one uuid is NULL (NULL is one uuid, as GROUP BY groups it). True asks for the uuids
    themselves to be compared (two uuids may share a hash)."""
    kept = [int(np.count_nonzero(group.valid)) for group in groups]
    nulls = sum(group.valid.size for group in groups) - sum(kept)
    hashes = np.empty(sum(kept), np.uint64)  # filled group by group: one copy, not two
    bounds = itertools.pairwise(np.cumsum([0, *kept]).tolist())
    for group, (start, stop) in zip(groups, bounds, strict=True):
        np.compress(group.valid, group.hashes, out=hashes[start:stop])
    hashes.sort()
    return nulls > 1 or bool((hashes[1:] == hashes[:-1]).any())

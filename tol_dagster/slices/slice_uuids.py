"""A slice's uuids and their hashes, read once for the two checks that need them: the `emb`
check places each row in the mirror by its hash, and `uuids_unique` is told from the same hashes
(distinct hashes are distinct uuids; equal ones are confirmed on the uuids themselves). Counting
distinct uuids in DuckDB instead was most of a small slice's key-and-uuid query (1 of 2 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.validation.uuid_index import uuid_row_hashes


@dataclass(frozen=True)
class RowGroupUuids:
    """One row group's uuids, and the hash of each (NULL rows hashed too: see `valid`)."""

    uuids: pa.Array
    hashes: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(self.uuids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def read_slice_uuids(written: pq.ParquetFile) -> list[RowGroupUuids]:
    """Each row group's uuids as pyarrow reads them, hashed in one query (each costs ~0.7 ms
    however few the uuids). The blocking checks take them from their key query instead
    (`checks.slice_checks`); this reads them for the `emb` check alone, and when that query's
    rows do not add up to the footer's."""
    columns = [row_group_column(written, g, "uuid") for g in range(written.num_row_groups)]
    if not columns:
        return []
    hashes = uuid_row_hashes(pa.chunked_array(columns))
    ends = np.cumsum([len(column) for column in columns])[:-1]
    return [
        RowGroupUuids(column, part)
        for column, part in zip(columns, np.split(hashes, ends), strict=True)
    ]


def row_group_column(written: pq.ParquetFile, group: int, name: str) -> pa.Array:
    """One column of one row group, decoded in this thread: a row group at a time bounds the
    memory (~25 MB of `emb` for a row group we wrote, 77 MB for one copied from the mirror),
    and reading it whole decodes 3x faster than a streaming reader with small buffers."""
    column = written.read_row_group(group, columns=[name], use_threads=False).column(0)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # no copy


def may_repeat(groups: list[RowGroupUuids]) -> bool:
    """False when no uuid can appear twice: the hashes of the non-NULL uuids all differ and at
    most one uuid is NULL (NULL is one uuid, as GROUP BY groups it). True asks for the uuids
    themselves to be compared (two uuids may share a hash)."""
    nulls = sum(group.uuids.null_count for group in groups)
    hashes = np.concatenate(
        [np.empty(0, np.uint64), *(group.hashes[group.valid] for group in groups)]
    )
    hashes.sort()
    return nulls > 1 or bool((hashes[1:] == hashes[:-1]).any())

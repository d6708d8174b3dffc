"""Runs of equal keys in sorted data: the mirror is sorted by lineage, and so are the tables
built from it, so grouping is finding where a key changes, with no hashing and no sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def changes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A bool per row: True where the value differs from the previous row's (and at row 0).

    NULL equals NULL here, as in GROUP BY, so a NULL hole is one run, not one run per row.
    Comparing neighbours is ~2.5x faster than dictionary-encoding the column.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = np.ones(len(values), dtype=bool)
    if len(values) > 1:
        after, before = values.slice(1), values.slice(0, len(values) - 1)
        differ = pc.fill_null(pc.not_equal(after, before), False)
        one_null = pc.xor(after.is_null(), before.is_null())
        out[1:] = pc.or_(differ, one_null).to_numpy(zero_copy_only=False)
    return out


def run_starts(table: pa.Table | pa.RecordBatch, keys: Sequence[str]) -> np.ndarray:
    """Row numbers where a run of equal `keys` starts (row 0 included when there are rows)."""
    changed = np.zeros(table.num_rows, dtype=bool)
    for key in keys:
        changed |= changes(table.column(key))
    return np.flatnonzero(changed)


def sort_by(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """`table` in the mirror's order of `keys`: ascending, byte-wise, NULLs last."""
    return table.sort_by([(key, "ascending") for key in keys])


def concat_sorted(parts: Sequence[pa.Table], keys: Sequence[str], schema: pa.Schema) -> pa.Table:
    """Concatenate tables each sorted by `keys` into one sorted table.

    Parts cut from one sorted sequence (per-file results of a sorted mirror, in file order) are
    already in order, which a look at each seam proves; only otherwise is the whole sorted.
    """
    parts = [part for part in parts if part.num_rows]
    table = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
    if all(_key(a, a.num_rows - 1, keys) <= _key(b, 0, keys) for a, b in pairwise(parts)):
        return table
    return sort_by(table, keys)


def sum_runs(table: pa.Table, keys: Sequence[str], values: Sequence[str]) -> pa.Table:
    """One row per run of equal `keys` in sorted `table`, with `values` summed over the run."""
    starts = run_starts(table, keys)
    out = table.select(list(keys)).take(starts)
    for name in values:
        column = table[name].to_numpy()
        out = out.append_column(name, pa.array(np.add.reduceat(column, starts), table[name].type))
    return out


def sum_row_runs(matrix: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The rows of `matrix` summed over each run that begins at `starts` (ascending, from 0),
    row after row in order. `np.add.reduceat(matrix, starts, axis=0)` walks a wide matrix
    column by column, ~2.5x slower where most runs are one row (a lineage in one file); this
    costs one pass per row of the longest run."""
    lengths = np.diff(starts, append=len(matrix))
    sums = matrix[starts]
    longer = np.flatnonzero(lengths > 1)
    row = 1
    while len(longer):
        sums[longer] += matrix[starts[longer] + row]
        row += 1
        longer = longer[lengths[longer] > row]
    return sums


def _key(table: pa.Table, row: int, keys: Sequence[str]) -> tuple[tuple[bool, str], ...]:
    """Row `row`'s keys as a Python tuple that orders like the mirror."""
    return mirror_order([table[key][row].as_py() for key in keys])


def mirror_order(values: Sequence[str | None]) -> tuple[tuple[bool, str], ...]:
    """Key values as a tuple that orders like the mirror (code point order is UTF-8 byte
    order; NULLs last)."""
    return tuple((value is None, value or "") for value in values)

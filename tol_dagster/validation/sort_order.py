"""The contract's row order: SORT_KEY ascending, byte-wise, NULLs last.

`compare_values` is the one statement of that order for single values; `check_sorted_within`
is its vectorized twin for a whole file (a test holds the two to the same answers), and
`check_sorted_across` applies it at the boundaries between files, on their first and last keys.
They say where NULLs were seen, since NULLs last is the contract's reading of upstream, not yet
confirmed on a real footer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.schema import SORT_KEY
from tol_dagster.validation.checks import SORTED_BY_CONTRACT_KEY, CheckResult

#: The values of SORT_KEY for one row; None is NULL.
SortKey = tuple[str | None, ...]


class FileEnds(Protocol):
    """A file's name and the sort keys of its first and last rows (as `FileFacts` keeps them;
    None for a file without rows)."""

    @property
    def name(self) -> str: ...
    @property
    def first_key(self) -> SortKey | None: ...
    @property
    def last_key(self) -> SortKey | None: ...


def compare_values(a: str | None, b: str | None) -> int:
    """-1, 0 or 1: the contract's order for one column, byte-wise with NULLs last.

    Python compares str by code point, which is UTF-8 byte order. `check_sorted_within` is
    the vectorized twin of this rule; a test holds them to the same answers.
    """
    if a == b:
        return 0
    if a is None:
        return 1
    if b is None:
        return -1
    return -1 if a < b else 1


def first_difference(a: SortKey, b: SortKey) -> tuple[int, int] | None:
    """(column index, -1 or 1) of the first column where keys `a` and `b` differ, else None."""
    for index, (x, y) in enumerate(zip(a, b, strict=True)):
        order = compare_values(x, y)
        if order:
            return index, order
    return None


def sort_key_le(a: SortKey, b: SortKey) -> bool:
    """True if a row with key `a` may come before one with key `b` in the contract's order."""
    difference = first_difference(a, b)
    return difference is None or difference[1] < 0


def key_at(keys: pa.Table, row: int) -> SortKey:
    """The SORT_KEY values of one row."""
    return tuple(keys.column(column)[row].as_py() for column in SORT_KEY)


def describe_step(a: SortKey, b: SortKey) -> str:
    """Why key `b` may not follow key `a` (call it on a bad pair): the deciding column and
    the NULL placement that pair shows."""
    difference = first_difference(a, b)
    if difference is None:
        return "equal keys"
    index, _ = difference
    column, x, y = SORT_KEY[index], a[index], b[index]
    if x is None:
        return f"column {column!r}: NULL before {y!r}, i.e. NULLs first"
    if y is None:
        return f"column {column!r}: {x!r} before NULL, i.e. NULLs last"
    return f"column {column!r}: {x!r} before {y!r}, which sorts first byte-wise"


def check_sorted_within(name: str, keys: pa.Table) -> CheckResult:
    """Rows of `keys` (the SORT_KEY columns) ascend in the contract's order, NULLs last.

    Vectorized over pairs of adjacent rows, on each column's ranks (`_ranks`): integers
    compared, no Python object per row.
    It also counts where NULLs sit against values at each column, so a failure says which
    placement the file actually uses (the contract's NULLs last is not confirmed upstream).
    """
    rows = keys.num_rows
    nulls_first: dict[str, int] = {}
    nulls_last: dict[str, int] = {}
    if rows < 2:
        return CheckResult(SORTED_BY_CONTRACT_KEY, True, f"{name}: {rows} row(s), sorted")
    undecided = np.ones(rows - 1, dtype=bool)
    inverted = np.zeros(rows - 1, dtype=bool)
    value_inversions = 0
    for column in SORT_KEY:
        ranks, null = _ranks(keys.column(column))
        a, b = ranks[:-1], ranks[1:]
        a_null, b_null = a == null, b == null
        values = ~a_null & ~b_null
        greater, less = values & (a > b), values & (a < b)
        null_then_value = undecided & a_null & ~b_null
        value_then_null = undecided & ~a_null & b_null
        greater &= undecided
        nulls_first[column] = int(null_then_value.sum())
        nulls_last[column] = int(value_then_null.sum())
        value_inversions += int(greater.sum())
        inverted |= greater | null_then_value
        undecided &= ~(greater | less | null_then_value | value_then_null)
    placement = _placement(nulls_first, nulls_last)
    details: dict[str, Any] = {
        "nulls_first_boundaries": {c: n for c, n in nulls_first.items() if n},
        "nulls_last_boundaries": {c: n for c, n in nulls_last.items() if n},
        "out_of_order_pairs": int(inverted.sum()),
    }
    if not inverted.any():
        return CheckResult(
            SORTED_BY_CONTRACT_KEY,
            True,
            f"{name}: {rows:,} rows sorted by {', '.join(SORT_KEY)}; NULL placement seen: {placement}",
            details,
        )
    row = int(np.argmax(inverted))
    before, after = key_at(keys, row), key_at(keys, row + 1)
    verdict = ""
    if value_inversions == 0:
        verdict = " The rows look sorted with NULLs first; the contract sorts NULLs last."
    details.update({"first_bad_row": row, "key_before": list(before), "key_after": list(after)})
    return CheckResult(
        SORTED_BY_CONTRACT_KEY,
        False,
        f"{name}: rows {row} and {row + 1} are out of order ({describe_step(before, after)}): "
        f"{before} then {after}; {details['out_of_order_pairs']:,} such pair(s); "
        f"NULL placement seen: {placement}.{verdict}",
        details,
    )


def check_sorted_across(facts_in_file_order: Sequence[FileEnds]) -> CheckResult:
    """Each file's last key <= the next file's first key (files without rows are skipped)."""
    with_rows = [
        f for f in facts_in_file_order if f.first_key is not None and f.last_key is not None
    ]
    problems = []
    for left, right in itertools.pairwise(with_rows):
        assert left.last_key is not None and right.first_key is not None
        if not sort_key_le(left.last_key, right.first_key):
            problems.append(
                {
                    "file_before": left.name,
                    "file_after": right.name,
                    "last_key": list(left.last_key),
                    "first_key": list(right.first_key),
                    "message": (
                        f"{left.name} ends with {left.last_key} but {right.name} starts with "
                        f"{right.first_key} ({describe_step(left.last_key, right.first_key)})"
                    ),
                }
            )
    if not problems:
        return CheckResult(
            SORTED_BY_CONTRACT_KEY,
            True,
            f"{len(with_rows)} files in order at every boundary",
            {"boundaries": max(0, len(with_rows) - 1)},
        )
    return CheckResult(
        SORTED_BY_CONTRACT_KEY,
        False,
        "rows out of order across files: "
        + "; ".join(str(p["message"]) for p in problems[:5])
        + (f"; and {len(problems) - 5} more boundaries" if len(problems) > 5 else ""),
        {"bad_boundaries": problems[:50], "bad_boundary_count": len(problems)},
    )


def _ranks(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """Each row's place among the column's distinct values in byte-wise order, and the
    place of NULL, after every value: adjacent rows compare as their ranks do.

    Ranked on the column's dictionary (the gate reads the key columns dictionary-encoded: a
    few thousand values, not a string per row); a column of plain values is encoded first."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = column.unify_dictionaries()  # one dictionary, each value once
    if not column.num_chunks:
        return np.zeros(0, np.int64), 0
    dictionary = column.chunk(0).dictionary
    ranks = pc.rank(dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
    ranks = ranks.astype(np.int64) - 1
    valid = np.asarray(dictionary.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    null = int(ranks[valid].max()) + 1 if valid.any() else 0
    ranks = np.append(np.where(valid, ranks, null), null)  # a NULL index: position len(dict)
    indices = [
        chunk.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
        for chunk in column.chunks
    ]
    return ranks[np.concatenate(indices)], null


def _placement(nulls_first: dict[str, int], nulls_last: dict[str, int]) -> str:
    parts = [f"NULLs last in {c!r} ({n:,}x)" for c, n in nulls_last.items() if n]
    parts += [f"NULLs first in {c!r} ({n:,}x)" for c, n in nulls_first.items() if n]
    return ", ".join(parts) if parts else "no NULL next to a value in any key column"

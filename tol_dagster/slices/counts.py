"""How many rows of the mirror a slice key matches, and the refusal of a key that matches none.

The count is what the slice's `rows_match_summary` check compares the written slice with, and
what decides, before anything is built, whether a key is a probable misspelling: a misspelt
taxon must not become a green 0-row slice, so the error names close values of the taxon index.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster import duck
from tol_dagster.derived.taxon_index import lookup
from tol_dagster.errors import EmptySliceError
from tol_dagster.slices.keys import SliceKey, to_sql_filter
from tol_dagster.slices.locate import Span, index_counts_exactly, locate, plan_scans
from tol_dagster.store.mirror_files import MirrorFile

#: Close matches named when a key's taxon has no rows.
CLOSE_MATCHES = 5
#: difflib's similarity cutoff for a close match (its default).
CLOSE_MATCH_CUTOFF = 0.6


def expected_count(key: SliceKey, index: pa.Table | None, files: Sequence[MirrorFile]) -> int:
    """Rows of the mirror that satisfy `key`: summed from the index where its entries are
    exactly the key's rows, else counted by DuckDB from the filter columns of what the index
    names (every file without an index)."""
    if index is not None and len(key.conditions) == 1 and index_counts_exactly(*key.conditions[0]):
        rank, value = key.conditions[0]
        return sum(entry.rows for entry in lookup(index, rank, value))
    where, params = to_sql_filter(key)
    if not files:
        return 0
    if index is None or locate(key, index) is None:
        paths = [str(f.path) for f in files]
        return _count(f"SELECT count(*) FROM read_parquet(?) WHERE {where}", [paths, *params])
    total = 0
    for scan in plan_scans(key, files, index):
        for piece in scan.pieces:
            if not isinstance(piece, Span):
                total += piece.rows
            else:
                total += _count(
                    "SELECT count(*) FROM read_parquet(?) WHERE file_row_number >= ? "
                    f"AND file_row_number < ? AND {where}",
                    [str(scan.file.path), piece.start, piece.stop, *params],
                )
    return total


def refuse_empty(key: SliceKey, index: pa.Table | None, rows: int) -> None:
    """`EmptySliceError` when `key` matches no row of the mirror (`rows` is its count): a
    misspelt taxon must not become a green 0-row slice. Names up to CLOSE_MATCHES close
    values from the taxon index, for each condition whose value it does not hold."""
    if rows:
        return
    missing = [
        (rank, value)
        for rank, value in key.conditions
        if index is None or not lookup(index, rank, value)
    ]
    matches: dict[str, None] = {}
    if index is not None:
        for rank, value in missing:
            for match in close_matches(index, rank, value):
                matches[SliceKey(((rank, match),)).name] = None
    if missing or index is None:
        cause = "; ".join(f"no {rank} is named {value!r}" for rank, value in missing)
    else:
        cause = "each condition matches rows, but no row satisfies all of them"
    hint = f"; close matches: {', '.join(matches)}" if matches else "; no close match"
    raise EmptySliceError(
        f"slice {key.name}: no rows in the mirror match ({cause or 'nothing to match'}){hint}. "
        "Check the spelling (names are case-sensitive), or build it empty on purpose with "
        "`tol-dagster slice KEY --allow-empty` (in the UI: the run config's allow_empty)",
        tuple(matches),
    )


def close_matches(index: pa.Table, rank: str, value: str, n: int = CLOSE_MATCHES) -> list[str]:
    """Up to `n` values of `rank` in the taxon index most like `value` (difflib's ratio).

    Values whose length alone rules out the cutoff are dropped in Arrow first: a rank may
    hold millions of names, and difflib is pure Python.
    """
    values = pc.unique(index.filter(pc.equal(index["rank"], rank))["value"])
    lengths = pc.utf8_length(values)
    # ratio <= 2 * min(len) / (len + len): keep lengths for which the cutoff is reachable.
    # (A margin for rounding: 0.6 * 7 / 1.4 is 3.0000000000000004.)
    low = CLOSE_MATCH_CUTOFF * len(value) / (2 - CLOSE_MATCH_CUTOFF) - 1e-6
    high = len(value) * (2 - CLOSE_MATCH_CUTOFF) / CLOSE_MATCH_CUTOFF + 1e-6
    near = values.filter(pc.and_(pc.greater_equal(lengths, low), pc.less_equal(lengths, high)))
    candidates = [v for v in near.to_pylist() if v is not None]
    return difflib.get_close_matches(value, candidates, n=n, cutoff=CLOSE_MATCH_CUTOFF)


def _count(query: str, params: list[Any]) -> int:
    with duck.cursor() as con:
        row = con.execute(query, params).fetchone()
    return int(row[0]) if row else 0

"""The blocking checks of a slice file, run on the finished temp file before it is published.

Each is named as the predicate it asserts. All read the slice back with an engine other than
the one that wrote it (DuckDB or pyarrow), so a fault of the splicer or the page reader shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.slices.keys import SliceKey, to_sql_filter
from tol_dagster.slices.locate import plan_scans
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.emb_integrity import (
    digests_path,
    emb_matrix,
    ensure_table,
    row_digests,
)
from tol_dagster.validation.file_facts import schema_differences
from tol_dagster.validation.uuid_index import uuid_row_hashes

#: The rows equal the taxon index's count for the key; the check keeps its first name, a public
#: contract (asset check names), though the count comes from the taxon index, not a summary.
ROWS_MATCH_INDEX_COUNT = "rows_match_summary"
ROWS_SATISFY_KEY = "rows_satisfy_key"
UUIDS_UNIQUE = "uuids_unique"
SCHEMA_MATCHES_MIRROR = "schema_matches_mirror"
EMB_MATCHES_MIRROR = "emb_matches_mirror"

#: Rows of the slice read back at a time by `check_emb_matches_mirror` (~25 MB at 768 dims).
EMB_CHECK_ROWS = 16_384


def slice_checks(
    path: Path,
    key: SliceKey,
    expected_rows: int,
    mirror_schema: pa.Schema,
    files: Sequence[MirrorFile],
    index: pa.Table | None = None,
    *,
    layout: Layout,
    config: str,
) -> list[CheckResult]:
    """Every blocking check of a slice file (pass as `verify` to check before publishing);
    `index` (the taxon index) narrows the mirror files the `emb` check looks rows up in, and
    `layout`/`config` say where the gate keeps those files' `emb` digests."""
    return [
        check_rows_match_index_count(path, key, expected_rows),
        check_rows_satisfy_key(path, key),
        check_uuids_unique(path, key),
        check_schema_matches(path, mirror_schema, key),
        check_emb_matches_mirror(path, key, files, index, layout=layout, config=config),
    ]


def check_rows_match_index_count(path: Path, key: SliceKey, expected: int) -> CheckResult:
    """The slice has as many rows as the taxon index counts for its key (`expected`, from
    `counts.expected_count`)."""
    rows = pq.read_metadata(path).num_rows
    details = {"rows": rows, "expected": expected}
    if rows == expected:
        return CheckResult(
            ROWS_MATCH_INDEX_COUNT, True, f"slice {key.name}: {rows:,} rows, as counted", details
        )
    return CheckResult(
        ROWS_MATCH_INDEX_COUNT,
        False,
        f"slice {key.name}: {rows:,} rows but the mirror counts {expected:,}: the taxon index "
        "may be older than the mirror; rebuild the taxon index, then the slice",
        details,
    )


def check_rows_satisfy_key(path: Path, key: SliceKey) -> CheckResult:
    """Every row of the slice satisfies its key (a NULL in a keyed column does not)."""
    where, params = to_sql_filter(key)
    with duck.cursor() as con:
        bad, first = con.execute(
            "SELECT count(*), list(uuid)[:5] FROM read_parquet(?) "
            f"WHERE NOT coalesce(({where}), false)",
            [str(path), *params],
        ).fetchone() or (0, [])
    details: dict[str, Any] = {"violations": bad, "first": first or []}
    if not bad:
        return CheckResult(
            ROWS_SATISFY_KEY, True, f"slice {key.name}: every row satisfies the key", details
        )
    return CheckResult(
        ROWS_SATISFY_KEY,
        False,
        f"slice {key.name}: {bad:,} rows do not satisfy the key (first uuids "
        f"{details['first']}); rebuild the slice",
        details,
    )


def check_uuids_unique(path: Path, key: SliceKey) -> CheckResult:
    """No uuid appears twice in the slice."""
    with duck.cursor() as con:
        dups, first = con.execute(
            "SELECT count(*), list(uuid ORDER BY uuid)[:5] FROM (SELECT uuid FROM "
            "read_parquet(?) GROUP BY uuid HAVING count(*) > 1)",
            [str(path)],
        ).fetchone() or (0, [])
    details: dict[str, Any] = {"duplicated": dups, "first": first or []}
    if not dups:
        return CheckResult(UUIDS_UNIQUE, True, f"slice {key.name}: uuids are unique", details)
    return CheckResult(
        UUIDS_UNIQUE,
        False,
        f"slice {key.name}: {dups:,} uuids appear more than once (first "
        f"{details['first']}); the mirror's uuid check should have caught this: audit the mirror",
        details,
    )


def check_schema_matches(
    path: Path, mirror_schema: pa.Schema, key: SliceKey | None = None
) -> CheckResult:
    """The slice's schema is the mirror's: same columns, order and exact types."""
    name = f"slice {key.name}" if key is not None else str(path)
    differences = schema_differences(pq.read_schema(path), mirror_schema)
    details: dict[str, Any] = {"differences": differences}
    if not differences:
        return CheckResult(SCHEMA_MATCHES_MIRROR, True, f"{name}: schema equals the mirror's")
    return CheckResult(
        SCHEMA_MATCHES_MIRROR,
        False,
        f"{name}: schema differs from the mirror's: {'; '.join(differences)}; rebuild the slice",
        details,
    )


# --- emb_matches_mirror --------------------------------------------------------------------------


def check_emb_matches_mirror(
    path: Path,
    key: SliceKey,
    files: Sequence[MirrorFile],
    index: pa.Table | None = None,
    *,
    layout: Layout,
    config: str,
) -> CheckResult:
    """Every row of the slice is a row of the mirror with the same `emb` bytes, in mirror order.

    The slice is read back by pyarrow, independently of what wrote it (the splicer, the page
    reader); each row's uuid hash and `emb` digest are computed as the gate computes them
    (`validation.emb_integrity`) and looked up in the digest tables the gate keeps for the mirror
    files, by sha256: the uuid must be there, with the same digest (any one changed value is
    always seen; several cancel out with odds of 2**-32), at a (file, row) position after the
    previous row's. With the row count and key checks, that makes the slice the mirror's rows.
    The cost follows the slice, not the row groups it was cut from: the mirror is not decoded.
    `index` narrows the files looked in to those the key's rows lie in (every file without it).
    """
    candidates = files if index is None else [scan.file for scan in plan_scans(key, files, index)]
    for file in candidates:
        ensure_table(file, layout, config)
    lookup = _DigestLookup(
        [np.load(digests_path(layout, config, f), mmap_mode="r") for f in candidates]
    )
    verdict = _EmbVerdict()
    for batch in _streaming(path).iter_batches(batch_size=EMB_CHECK_ROWS, columns=["uuid", "emb"]):
        verdict.add(batch, lookup)
    return verdict.result(key)


def _streaming(path: Path) -> pq.ParquetFile:
    """A reader that buffers 8 MB at a time instead of pre-buffering: with pyarrow's default,
    memory grew with the slice (1.1 GB of RSS for a 390k-row slice, 0.6 GB without)."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=8 << 20)


class _DigestLookup:
    """Finds uuid hashes in the mirror files' digest tables (rows: uuid hash sorted, `emb`
    digest, row in the file), the first file in mirror order that holds a hash winning."""

    def __init__(self, tables: Sequence[np.ndarray]) -> None:
        self.tables = tables

    def find(
        self, hashes: np.ndarray, digests: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(file index or -1, row in that file, digest equal) for each hash: among a file's
        entries with the hash (a 64-bit collision), the one with the same digest if any."""
        owner = np.full(hashes.size, -1, dtype=np.int64)
        row = np.zeros(hashes.size, dtype=np.int64)
        same = np.zeros(hashes.size, dtype=bool)
        for number, table in enumerate(self.tables):
            todo = np.flatnonzero(owner < 0)
            if not todo.size:
                break
            low = np.searchsorted(table[0], hashes[todo], side="left")
            high = np.searchsorted(table[0], hashes[todo], side="right")
            hit = high > low
            at, low, high = todo[hit], low[hit], high[hit]
            owner[at], row[at] = number, table[2][low]
            same[at] = table[1][low] == digests[at]
            for k in np.flatnonzero((high - low > 1) & ~same[at]).tolist():
                for entry in range(int(low[k]) + 1, int(high[k])):
                    if table[1][entry] == digests[at[k]]:
                        row[at[k]], same[at[k]] = table[2][entry], True
                        break
        return owner, row, same


@dataclass
class _EmbVerdict:
    """The comparison so far: rows seen, the last (file, row) position, the first fault."""

    compared: int = 0
    differing: int = 0
    last: tuple[int, int] = (-1, -1)
    first: dict[str, Any] | None = None
    faults: dict[str, int] = field(default_factory=dict)

    def add(self, batch: pa.RecordBatch, lookup: _DigestLookup) -> None:
        uuids, emb = batch.column(0), batch.column(1)
        matrix = emb_matrix(emb)
        if matrix is None:
            self._fault(0, "type", uuids[0].as_py() if len(uuids) else None, batch.num_rows)
            return
        valid = np.asarray(emb.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        digests = row_digests(matrix, valid)
        hashes = uuid_row_hashes(uuids)
        owner, row, same = lookup.find(hashes, digests)
        owner[~np.asarray(uuids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = -1
        for at, kind in _faults(owner, row, same, self.last):
            self._fault(at, kind, uuids[at].as_py(), 1)
        if len(owner):
            self.last = (int(owner[-1]), int(row[-1]))
        self.compared += batch.num_rows

    def _fault(self, at: int, kind: str, uuid: object, count: int) -> None:
        self.differing += count
        self.faults[kind] = self.faults.get(kind, 0) + count
        if self.first is None:
            self.first = {"row": self.compared + at, "uuid": uuid, "fault": kind}

    def result(self, key: SliceKey) -> CheckResult:
        details: dict[str, Any] = {
            "rows_compared": self.compared,
            "rows_differing": self.differing,
            "faults": self.faults,
        }
        if self.first is None:
            return CheckResult(
                EMB_MATCHES_MIRROR,
                True,
                f"slice {key.name}: all {self.compared:,} rows are the mirror's, in its order, "
                "with the same emb bytes",
                details,
            )
        details["first"] = self.first
        return CheckResult(
            EMB_MATCHES_MIRROR,
            False,
            f"slice {key.name}: {_describe(self.first)} ({self.differing:,} of "
            f"{self.compared:,} rows differ): the slice writer produced wrong rows; it was not "
            "published. Rebuild it, and report this if it happens again",
            details,
        )


def _faults(
    owner: np.ndarray, row: np.ndarray, same: np.ndarray, last: tuple[int, int]
) -> Iterator[tuple[int, str]]:
    """(position, fault) of each row of a batch that is not the mirror's next row with its
    `emb`: not in the mirror, other `emb` bytes, or out of mirror order."""
    previous_owner = np.concatenate([[last[0]], owner[:-1]])
    previous_row = np.concatenate([[last[1]], row[:-1]])
    ordered = (owner > previous_owner) | ((owner == previous_owner) & (row > previous_row))
    for at in np.flatnonzero((owner < 0) | ~same | ~ordered).tolist():
        yield at, "missing" if owner[at] < 0 else "emb" if not same[at] else "order"


def _describe(first: dict[str, Any]) -> str:
    row, uuid = f"{first['row']:,}", first["uuid"]
    return {
        "missing": f"row {row} is uuid {uuid}, which no mirror file of the taxon holds",
        "emb": f"emb of uuid {uuid} (row {row}) differs from the mirror's",
        "order": f"row {row} (uuid {uuid}) is out of the mirror's order",
        "type": f"emb of row {row} is not a fixed-size list of floats",
    }[first["fault"]]

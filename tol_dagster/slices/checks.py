"""The blocking checks of a slice file, run on the finished temp file before it is published.

Each is named as the predicate it asserts. All read the slice back with an engine other than
the one that wrote it (DuckDB or pyarrow), so a fault of the splicer or the page reader shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.schema import quote_ident
from tol_dagster.slices.emb_check import check_emb_matches_mirror
from tol_dagster.slices.keys import SliceKey, filter_columns, to_sql_filter
from tol_dagster.slices.slice_uuids import SliceUuids, may_repeat, read_slice_uuids
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.contract import schema_differences

#: The rows equal the taxon index's count for the key; the check keeps its first name, a public
#: contract (asset check names), though the count comes from the taxon index, not a summary.
ROWS_MATCH_INDEX_COUNT = "rows_match_summary"
ROWS_SATISFY_KEY = "rows_satisfy_key"
UUIDS_UNIQUE = "uuids_unique"
SCHEMA_MATCHES_MIRROR = "schema_matches_mirror"

#: Rows of the checks' DuckDB query handed over at a time (`_check_columns`).
_STREAMED_ROWS = 1 << 20


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
    read: pa.Table | None = None,
) -> list[CheckResult]:
    """Every blocking check of a slice file (pass as `verify` to check before publishing);
    `index` (the taxon index) narrows the mirror files the `emb` check looks rows up in, and
    `layout`/`config` say where the gate keeps those files' `emb` digests. `read`: the file's
    rows as `row_check_columns` reads them, read with other slices' (queried here if None)."""
    with pq.ParquetFile(path) as written:  # its footer read once for the three checks
        uuids, violations = _uuids_and_violations(path, key, written, read)
        emb = check_emb_matches_mirror(
            path, key, files, index, layout=layout, config=config, written=written, uuids=uuids
        )
        repeats = may_repeat(uuids)  # last: it sorts the hashes in place
        facts = (
            row_facts(path, key, uuids_may_repeat=repeats)
            if violations != 0 or repeats
            else RowFacts(0, [], 0, [])
        )
        return [
            check_rows_match_index_count(path, key, expected_rows, written.metadata.num_rows),
            check_rows_satisfy_key(path, key, facts),
            check_uuids_unique(path, key, facts),
            check_schema_matches(path, mirror_schema, key, written.schema_arrow),
            emb,
        ]


def row_check_columns(where: str) -> str:
    """What the checks read of each row with DuckDB: its uuid's hash, whether the uuid is not
    NULL, and whether the row fails the key's predicate `where` (NULL fails). Not the uuid
    itself: ~80 bytes a row where these are ~10 (`slice_uuids`)."""
    return f"hash(uuid) AS h, uuid IS NOT NULL AS valid, NOT coalesce(({where}), false) AS bad"


def _uuids_and_violations(
    path: Path, key: SliceKey, written: pq.ParquetFile, read: pa.Table | None = None
) -> tuple[SliceUuids, int | None]:
    """The slice's uuid hashes (`SliceUuids`), and how many rows do not satisfy `key`,
    from one DuckDB query over the slice, streamed (`read`, if a query over several slices read
    it already: each query costs ~3 ms however small the slice, and a rank checks thousands).
    None violations: DuckDB read another number of rows than the footer holds, so the uuids
    are read by pyarrow and the caller counts again."""
    sizes = [written.metadata.row_group(g).num_rows for g in range(written.num_row_groups)]
    if read is None:
        where, params = to_sql_filter(key)
        with duck.cursor() as con:
            batches = con.sql(
                f"SELECT {row_check_columns(where)} FROM read_parquet(?)",
                params=[*params, str(path)],
            ).to_arrow_reader(_STREAMED_ROWS)
            columns = _check_columns(batches, sum(sizes))
    else:
        columns = _check_columns(read.to_batches(), sum(sizes))
    if columns is None:
        return read_slice_uuids(written), None
    hashes, valid, violations = columns
    return SliceUuids(hashes, valid, sizes), violations


def _check_columns(
    batches: Iterable[pa.RecordBatch], rows: int
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The uuid hashes, non-NULL uuids and count of rows off the key that `batches` hold,
    copied into one array each as they come (the whole result as Arrow was ~25 bytes a row
    more); None unless they hold exactly `rows` rows."""
    hashes, valid = np.empty(rows, np.uint64), np.empty(rows, bool)
    violations = at = 0
    for batch in batches:
        end = at + batch.num_rows
        if end > rows:
            return None
        hashes[at:end] = batch.column("h").to_numpy()
        valid[at:end] = batch.column("valid").to_numpy(zero_copy_only=False)
        violations += int(pc.sum(batch.column("bad")).as_py() or 0)
        at = end
    return (hashes, valid, violations) if at == rows else None


def check_rows_match_index_count(
    path: Path, key: SliceKey, expected: int, rows: int | None = None
) -> CheckResult:
    """The slice has as many rows as the taxon index counts for its key (`expected`, from
    `counts.expected_count`); `rows`, its footer's count, read here unless given."""
    rows = pq.read_metadata(path).num_rows if rows is None else rows
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


@dataclass(frozen=True)
class RowFacts:
    """What two checks need of a slice's rows, read by DuckDB in one query: the rows that do
    not satisfy the key and the uuids that appear twice (counts, and the first few uuids)."""

    violations: int
    first_violations: list[str]
    duplicated: int
    first_duplicated: list[str]


def row_facts(path: Path, key: SliceKey, *, uuids_may_repeat: bool = True) -> RowFacts:
    """The slice's `RowFacts`: one query counts (each costs a file open and a plan); a second
    names the first rows only when a check fails. `uuids_may_repeat` False (the uuids' hashes
    all differ: `slice_uuids.may_repeat`) leaves the uuids out of the count."""
    where, params = to_sql_filter(key)
    # rows beyond one per uuid, NULL being one uuid (as GROUP BY groups them)
    repeated = "count(*) - count(DISTINCT uuid) - (count(*) > count(uuid))::INTEGER"
    with duck.cursor() as con:
        counted = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT coalesce(({where}), false)), "
            f"{repeated if uuids_may_repeat else '0'} FROM read_parquet(?)",
            [*params, str(path)],
        ).fetchone()
        if counted is None or counted == (0, 0):
            return RowFacts(0, [], 0, [])
        return _named_row_facts(con, path, key)


def _named_row_facts(con: duckdb.DuckDBPyConnection, path: Path, key: SliceKey) -> RowFacts:
    """`RowFacts` with the first uuids that fail each check."""
    where, params = to_sql_filter(key)
    columns = ", ".join(quote_ident(c) for c in dict.fromkeys(["uuid", *filter_columns(key)]))
    found = con.execute(
        f"WITH s AS MATERIALIZED (SELECT {columns} FROM read_parquet(?)), "
        f"bad AS (SELECT count(*) AS n, list(uuid)[:5] AS f FROM s "
        f"WHERE NOT coalesce(({where}), false)), "
        "dup AS (SELECT count(*) AS n, list(uuid ORDER BY uuid)[:5] AS f FROM "
        "(SELECT uuid FROM s GROUP BY uuid HAVING count(*) > 1)) "
        "SELECT bad.n, bad.f, dup.n, dup.f FROM bad, dup",
        [str(path), *params],
    ).fetchone()
    bad, first_bad, dups, first_dups = found or (0, [], 0, [])
    return RowFacts(bad, first_bad or [], dups, first_dups or [])


def check_rows_satisfy_key(path: Path, key: SliceKey, facts: RowFacts | None = None) -> CheckResult:
    """Every row of the slice satisfies its key (a NULL in a keyed column does not)."""
    facts = facts or row_facts(path, key)
    bad = facts.violations
    details: dict[str, Any] = {"violations": bad, "first": facts.first_violations}
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


def check_uuids_unique(path: Path, key: SliceKey, facts: RowFacts | None = None) -> CheckResult:
    """No uuid appears twice in the slice."""
    facts = facts or row_facts(path, key)
    dups = facts.duplicated
    details: dict[str, Any] = {"duplicated": dups, "first": facts.first_duplicated}
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
    path: Path,
    mirror_schema: pa.Schema,
    key: SliceKey | None = None,
    found: pa.Schema | None = None,
) -> CheckResult:
    """The slice's schema (`found`, read here unless given) is the mirror's: same columns,
    order and exact types."""
    name = f"slice {key.name}" if key is not None else str(path)
    found = pq.read_schema(path) if found is None else found
    differences = schema_differences(found, mirror_schema)
    details: dict[str, Any] = {"differences": differences}
    if not differences:
        return CheckResult(SCHEMA_MATCHES_MIRROR, True, f"{name}: schema equals the mirror's")
    return CheckResult(
        SCHEMA_MATCHES_MIRROR,
        False,
        f"{name}: schema differs from the mirror's: {'; '.join(differences)}; rebuild the slice",
        details,
    )

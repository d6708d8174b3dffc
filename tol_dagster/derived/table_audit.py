"""The derived tables' audit (`bytes_as_published`): each published summary table, the taxon
index and the centroids still hold the bytes recorded when they were published
(`table_records`).

Readers trust these tables as they find them, and a flipped byte in a count or a centroid reads
without an error. The audit re-hashes each table and compares it with its record; it only
reads. A drifted table is named with what writes it anew: its asset's materialization, which
the slice sensor requests, and `tol-dagster slice` (and `sync`) runs before its own work
(`drifted_tables`), an incremental build whose copied segments are checked by their own sha256.

Not drift: a table never built, one published before records were kept (recorded by its next
build), one whose file changed in the last IN_FLIGHT_S after its record (a publish between
its rename and its record), and one a publish replaced and recorded after it was hashed (it is
checked again). Bit rot changes no mtime.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tol_dagster import progress
from tol_dagster.derived.summaries import SUMMARY_NAMES, summary_path
from tol_dagster.derived.table_records import TableRecord, load_record
from tol_dagster.store.hashing import (
    READ_TRIES,
    file_version,
    replaced_since,
    sha256_of_one_version,
)
from tol_dagster.store.layout import Layout
from tol_dagster.validation.checks import CheckResult

TABLES_AUDIT_CHECK = "bytes_as_published"
#: A table file written after its record and this recently is a publish in flight.
IN_FLIGHT_S = 600.0
#: The progress task of the audit (the command line's bar): tables looked at, bytes hashed.
AUDIT_TASK = "derived tables"


#: The derived tables, by their asset key after `tol/<config>/`.
DERIVED_TABLES: tuple[str, ...] = (
    *(f"summary/{name}" for name in SUMMARY_NAMES),
    "taxon_index",
    "centroids",
)


def table_path(layout: Layout, config: str, table: str) -> Path:
    """Where derived table `table` (a name of DERIVED_TABLES) is published."""
    if table == "taxon_index":
        return layout.taxon_index_path(config)
    if table == "centroids":
        return layout.centroids_path(config)
    return summary_path(layout, config, table.removeprefix("summary/"))


def audit_tables(
    layout: Layout, config: str, tables: Sequence[str] = DERIVED_TABLES
) -> dict[str, CheckResult]:
    """`bytes_as_published` of each of `tables` (names of DERIVED_TABLES)."""
    paths = {table: table_path(layout, config, table) for table in tables}
    total = sum(path.stat().st_size for path in paths.values() if path.is_file())
    progress.start(AUDIT_TASK, files=len(tables), bytes=total, what=config)
    results = {}
    for table in tables:
        results[table] = audit_table(layout, config, table, paths[table])
        progress.advance(AUDIT_TASK, files=1)
    return results


def audit_table(layout: Layout, config: str, table: str, path: Path) -> CheckResult:
    """Whether the file at `path` holds the bytes recorded when `table` was published. Checked
    again when a publish renamed another file in and recorded it after this one was hashed:
    the old bytes would not match the new record."""
    for _ in range(READ_TRIES):
        result, hashed = _audit_once(layout, config, table, path)
        if result.passed or hashed is None or not replaced_since(path, hashed):
            break
    return result


def _audit_once(
    layout: Layout, config: str, table: str, path: Path
) -> tuple[CheckResult, tuple[int, int, int, int] | None]:
    """The verdict on the file at `path` and the version of it hashed (None: none hashed). The
    record is read after the file: a publish renames its table in first."""
    mend = f"materialize tol/{config}/{table} to write it anew (`tol-dagster slice` does first)"
    try:
        stat, sha256 = sha256_of_one_version(path, progress.bytes_of(AUDIT_TASK))
    except FileNotFoundError:
        stat, sha256 = None, ""
    except OSError as error:  # a folder in its place, no permission, an I/O error
        return _drift(table, path, f"does not read ({error}); {mend}"), None
    hashed = None if stat is None else file_version(stat)
    try:
        record = load_record(layout, config, table)
    except ValueError as error:
        return _drift(table, path, f"{error}; {mend}"), hashed
    if stat is None:
        if record is None:
            return _result(table, path, f"{path} is not built yet", recorded=False), None
        return _drift(table, path, f"{path} is missing; {mend}"), None
    if record is None:
        note = "published before its sha256 was recorded: its next build records it"
        return _result(table, path, f"{path}: {note}", recorded=False), hashed
    if record.holds(stat.st_size, sha256):
        return _result(table, path, f"{path} holds the bytes published {_when(record)}"), hashed
    if hashed != record.version and time.time() - stat.st_mtime < IN_FLIGHT_S:
        note = f"changed in the last {IN_FLIGHT_S:.0f} s, being published: checked again next time"
        return _result(table, path, f"{path} {note}", in_flight=True), hashed
    reason = (
        f"{stat.st_size:,} bytes with sha256 {sha256[:12]}... where it was published "
        f"{_when(record)} with {record.bytes:,} bytes and sha256 {record.sha256[:12]}..."
    )
    return _drift(table, path, f"{path}: {reason}; {mend}"), hashed


def _when(record: TableRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.recorded_at))


def _result(
    table: str,
    path: Path,
    message: str,
    *,
    drifted: bool = False,
    recorded: bool = True,
    in_flight: bool = False,
) -> CheckResult:
    details = {"table": table, "path": str(path), "recorded": recorded, "in_flight": in_flight}
    return CheckResult(TABLES_AUDIT_CHECK, not drifted, message, details | {"drifted": drifted})


def _drift(table: str, path: Path, message: str) -> CheckResult:
    return _result(table, path, message, drifted=True)

"""The validation gate: every per-file check in one pass over a file, cross-file checks on facts.

`inspect_file` runs right after a file's download, in a worker thread, and must keep up with a
50 MB/s download of the same file: it reads the footer, the small metadata columns once
(pyarrow), and `emb` in small streamed batches (pyarrow decodes our `fixed_size_list<halffloat>`
and tests it with `is_finite` faster than DuckDB, which widens it to `FLOAT[]` first; memory
stays at one batch). What it learns is kept as `FileFacts`, a small JSON document, so the checks
across files (sort order at file boundaries, row totals, uuid uniqueness) never read a parquet
file again.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.schema import METADATA_COLUMNS, SORT_KEY, EmbBounds
from tol_dagster.store.hashing import sha256_file
from tol_dagster.validation import emb_digests, emb_norms, uuid_index
from tol_dagster.validation.checks import (
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    FOOTER_READS,
    METADATA_EXPECTATIONS,
    ROW_LOSS_WITHIN_LIMIT,
    ROWS_MATCH_CARD,
    ROWS_MATCH_FOOTER,
    SCHEMA_MATCHES_CONTRACT,
    SCHEMA_MATCHES_LAST_VALIDATED,
    SHA256_MATCHES_UPSTREAM,
    SORTED_BY_CONTRACT_KEY,
    UUID_UNIQUE,
    CheckResult,
    not_run,
)
from tol_dagster.validation.sort_order import (
    SortKey,
    check_sorted_within,
    describe_step,
    key_at,
    sort_key_le,
)

__all__ = [
    "EMB_FINITE",
    "EMB_NORMS_WITHIN_BOUNDS",
    "FOOTER_READS",
    "METADATA_EXPECTATIONS",
    "PER_FILE_CHECKS",
    "ROWS_MATCH_CARD",
    "ROWS_MATCH_FOOTER",
    "ROW_LOSS_WITHIN_LIMIT",
    "SCHEMA_MATCHES_CONTRACT",
    "SCHEMA_MATCHES_LAST_VALIDATED",
    "SHA256_MATCHES_UPSTREAM",
    "SORTED_BY_CONTRACT_KEY",
    "UUID_UNIQUE",
    "CheckResult",
    "FileFacts",
    "check_row_loss",
    "check_rows_match_card",
    "check_schema",
    "check_sha256",
    "check_sorted_across",
    "check_sorted_within",
    "inspect_file",
    "schema_differences",
    "sort_key_le",
]

#: The checks `inspect_file` reports for every file, in this order.
PER_FILE_CHECKS: tuple[str, ...] = (
    SHA256_MATCHES_UPSTREAM,
    FOOTER_READS,
    SCHEMA_MATCHES_CONTRACT,
    SCHEMA_MATCHES_LAST_VALIDATED,
    ROWS_MATCH_FOOTER,
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    METADATA_EXPECTATIONS,
    SORTED_BY_CONTRACT_KEY,
    UUID_UNIQUE,
)


@dataclass(frozen=True)
class FileFacts:
    """What the gate learned about one file: enough for every cross-file check, as JSON."""

    name: str
    sha256: str
    size: int
    rows: int | None
    footer_rows: int | None
    row_groups: int | None
    schema: tuple[tuple[str, str], ...] | None
    first_key: SortKey | None
    last_key: SortKey | None
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def result(self, check: str) -> CheckResult | None:
        return next((result for result in self.results if result.check == check), None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "sha256": self.sha256,
                "size": self.size,
                "rows": self.rows,
                "footer_rows": self.footer_rows,
                "row_groups": self.row_groups,
                "schema": self.schema,
                "first_key": self.first_key,
                "last_key": self.last_key,
                "results": [result.to_dict() for result in self.results],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> FileFacts:
        data = json.loads(text)
        schema = data["schema"]
        return cls(
            name=data["name"],
            sha256=data["sha256"],
            size=data["size"],
            rows=data["rows"],
            footer_rows=data["footer_rows"],
            row_groups=data["row_groups"],
            schema=None if schema is None else tuple((name, kind) for name, kind in schema),
            first_key=None if data["first_key"] is None else tuple(data["first_key"]),
            last_key=None if data["last_key"] is None else tuple(data["last_key"]),
            results=tuple(CheckResult.from_dict(result) for result in data["results"]),
        )


def inspect_file(
    path: Path,
    *,
    expected_sha256: str | None,
    actual_sha256: str | None,
    expected_schema: pa.Schema,
    last_validated_schema: pa.Schema | None = None,
    uuid_hashes_path: Path | None = None,
    emb_bounds: EmbBounds | None = None,
    emb_digests_path: Path | None = None,
) -> FileFacts:
    """Run every per-file check on the parquet file at `path` and return what it learned.

    `actual_sha256` is the hash the download computed while streaming; None hashes the file
    here. `expected_sha256` None (nothing announced upstream) passes with a note.

    "Rows read" is honest and cheap: every data page of every column is decoded exactly once
    (the metadata columns for the expectations and the sort, `emb` for the NaN check), so a
    truncated or undecodable page fails `rows_match_footer`; a bit flip that still decodes is
    the sha256 check's to catch (inside `emb`, also the emb checks'). If the footer does not read, every later check is reported
    as failed and not run. `uuid_hashes_path` (see `uuid_index.hashes_path`) receives the
    file's sorted uuid hashes for the cross-file uniqueness check, so that never re-reads it;
    `emb_digests_path` (see `emb_digests.digests_path`) receives each uuid's `emb` digest, from
    the same pass over `emb`, for `emb_unchanged_for_existing_uuids`. `emb_bounds` None (no
    bounds pinned for the config) passes `emb_norms_within_bounds` with a note.
    """
    path = Path(path)
    name = path.name
    sha256 = actual_sha256 or sha256_file(path)
    results = [check_sha256(name, expected_sha256, sha256)]
    try:
        parquet = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
        schema = parquet.schema_arrow
    except Exception as error:  # pyarrow raises several types for a broken footer
        results.append(
            CheckResult(
                FOOTER_READS,
                False,
                f"{name}: the parquet footer does not read ({error}); the file is truncated "
                "or not parquet: fetch it again",
                {"error": str(error)},
            )
        )
        after_footer = PER_FILE_CHECKS[PER_FILE_CHECKS.index(FOOTER_READS) + 1 :]
        results += [not_run(c, name, "the footer does not read") for c in after_footer]
        return FileFacts(
            name, sha256, path.stat().st_size, None, None, None, None, None, None, tuple(results)
        )

    footer_rows = parquet.metadata.num_rows
    row_groups = parquet.metadata.num_row_groups
    results.append(
        CheckResult(
            FOOTER_READS,
            True,
            f"{name}: footer reads: {footer_rows:,} rows in {row_groups} row groups",
            {"rows": footer_rows, "row_groups": row_groups},
        )
    )
    results.append(check_schema(name, schema, expected_schema, SCHEMA_MATCHES_CONTRACT))
    results.append(
        check_schema(name, schema, last_validated_schema, SCHEMA_MATCHES_LAST_VALIDATED)
        if last_validated_schema is not None
        else CheckResult(
            SCHEMA_MATCHES_LAST_VALIDATED, True, f"{name}: no validated schema yet (first sync)"
        )
    )

    metadata: pa.Table | str  # the table, or why it does not read
    try:
        metadata = parquet.read(columns=[c for c in METADATA_COLUMNS if c in schema.names])
    except Exception as error:
        metadata = f"the metadata columns do not read ({error})"
    emb = _scan_emb(parquet, emb_bounds) if "emb" in schema.names else _EMB_MISSING
    results.append(_rows_result(name, footer_rows, metadata, emb))
    results.append(
        _emb_result(name, emb) if isinstance(emb, _EmbScan) else not_run(EMB_FINITE, name, emb)
    )
    row_hashes = (
        None
        if isinstance(metadata, str) or "uuid" not in metadata.column_names
        else _guarded_hashes(metadata.column("uuid"))
    )
    results.append(_bounds_result(name, emb, emb_bounds, metadata))
    if (
        emb_digests_path is not None
        and isinstance(emb, _EmbScan)
        and emb.digests is not None
        and row_hashes is not None
        and emb.digests.size == row_hashes[0].size
    ):
        table = emb_digests.digest_table(row_hashes[0], row_hashes[1], emb.digests)
        emb_digests.save_table(emb_digests_path, table)

    first_key = last_key = None
    if isinstance(metadata, str):
        results += [not_run(c, name, metadata) for c in _METADATA_CHECKS]
    else:
        table = metadata
        results.append(_guarded(METADATA_EXPECTATIONS, name, lambda: _expectations(name, table)))
        missing = [c for c in SORT_KEY if c not in table.column_names]
        if missing:
            results.append(not_run(SORTED_BY_CONTRACT_KEY, name, f"columns {missing} missing"))
        else:
            keys = table.select(list(SORT_KEY))
            results.append(
                _guarded(SORTED_BY_CONTRACT_KEY, name, lambda: check_sorted_within(name, keys))
            )
            if keys.num_rows:
                first_key, last_key = key_at(keys, 0), key_at(keys, keys.num_rows - 1)
        results.append(
            _guarded(
                UUID_UNIQUE, name, lambda: _uuid_unique(name, path, row_hashes, uuid_hashes_path)
            )
            if "uuid" in table.column_names
            else not_run(UUID_UNIQUE, name, "column 'uuid' missing")
        )
    return FileFacts(
        name=name,
        sha256=sha256,
        size=path.stat().st_size,
        rows=None if isinstance(metadata, str) else metadata.num_rows,
        footer_rows=footer_rows,
        row_groups=row_groups,
        schema=describe_schema(schema),
        first_key=first_key,
        last_key=last_key,
        results=tuple(results),
    )


# --- sha256 ------------------------------------------------------------------------------


def check_sha256(name: str, expected: str | None, actual: str) -> CheckResult:
    """The file's sha256 equals the one upstream announced (its LFS oid)."""
    details = {"expected": expected, "actual": actual}
    if expected is None:
        return CheckResult(
            SHA256_MATCHES_UPSTREAM,
            True,
            f"{name}: upstream announced no sha256; local sha256 {actual}",
            details,
        )
    if expected.lower() == actual.lower():
        return CheckResult(SHA256_MATCHES_UPSTREAM, True, f"{name}: sha256 {actual}", details)
    return CheckResult(
        SHA256_MATCHES_UPSTREAM,
        False,
        f"{name}: sha256 {actual[:12]}... differs from upstream's {expected[:12]}...: the bytes "
        "are corrupt or incomplete, fetch the file again",
        details,
    )


# --- schema ------------------------------------------------------------------------------


def describe_schema(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """A schema as (column, type) pairs: JSON-able and readable."""
    return tuple((field.name, str(field.type)) for field in schema)


def check_schema(name: str, found: pa.Schema, expected: pa.Schema, check: str) -> CheckResult:
    """`found` has `expected`'s columns, in order, with the same types (nullability aside)."""
    against = "the contract" if check == SCHEMA_MATCHES_CONTRACT else "the last validated schema"
    differences = schema_differences(found, expected)
    details = {
        "differences": differences,
        "found": [list(pair) for pair in describe_schema(found)],
        "expected": [list(pair) for pair in describe_schema(expected)],
    }
    if not differences:
        return CheckResult(check, True, f"{name}: schema equals {against}", details)
    return CheckResult(
        check, False, f"{name}: schema differs from {against}: " + "; ".join(differences), details
    )


def schema_differences(found: pa.Schema, expected: pa.Schema) -> list[str]:
    """Readable differences: missing, extra, reordered columns and changed types."""
    differences = [f"missing column {n!r}" for n in expected.names if n not in found.names]
    differences += [f"extra column {n!r}" for n in found.names if n not in expected.names]
    differences += [
        f"column {n!r} appears {found.names.count(n)} times"
        for n in dict.fromkeys(found.names)
        if found.names.count(n) > 1
    ]
    common = [n for n in expected.names if n in found.names]
    found_order = [n for n in dict.fromkeys(found.names) if n in expected.names]
    if common != found_order:
        differences.append(f"columns out of order: expected {common}, found {found_order}")
    for column in common:
        differences += _type_differences(
            column,
            expected.field(column).type,
            found.field(found.names.index(column)).type,
        )
    return differences


def _type_differences(column: str, expected: pa.DataType, found: pa.DataType) -> list[str]:
    if found.equals(expected):
        return []
    if pa.types.is_fixed_size_list(expected) and pa.types.is_fixed_size_list(found):
        differences = []
        if found.list_size != expected.list_size:
            differences.append(
                f"column {column!r}: width {found.list_size}, expected {expected.list_size}"
            )
        if not found.value_type.equals(expected.value_type):
            differences.append(
                f"column {column!r}: element type {found.value_type}, "
                f"expected {expected.value_type}"
            )
        if differences:
            return differences
    return [f"column {column!r}: expected {expected}, found {found}"]


# --- rows and emb ------------------------------------------------------------------------


#: The per-file checks that need the metadata columns.
_METADATA_CHECKS = (METADATA_EXPECTATIONS, SORTED_BY_CONTRACT_KEY, UUID_UNIQUE)

#: Streamed reads with small batches keep one file's gate near 100 MB of Arrow memory; whole
#: row groups (50k rows, ~77 MB of `emb`) peaked at ~530 MB and decoded no faster.
READ_BUFFER_BYTES = 8 * 1024 * 1024
EMB_BATCH_ROWS = 10_000

#: Why the emb scan did not run on a file without `emb` (the schema check reports that file).
_EMB_MISSING = "column 'emb' missing"


@dataclass(frozen=True)
class _EmbScan:
    """What one pass over `emb` saw: non-finite rows, each row's digest (None when `emb` is not
    a list of floats), rows outside the config's bounds (None when none are pinned)."""

    rows: int
    null_rows: int
    bad_rows: int
    first_bad_row: int | None
    digests: np.ndarray | None = None
    bounds: emb_norms.BoundsScan | None = None


def _scan_emb(parquet: pq.ParquetFile, bounds: EmbBounds | None = None) -> _EmbScan | str:
    """Decode `emb` in batches of EMB_BATCH_ROWS and count rows holding NaN, Inf or NULL;
    digest each row's bytes and measure its norm against `bounds` on the same batches.

    One thread: the gate runs beside downloads and other files' gates. Returns why it could
    not read, if it could not.
    """
    rows = null_rows = bad_rows = 0
    first_bad: int | None = None
    digests: list[np.ndarray] | None = []
    in_bounds = None if bounds is None else emb_norms.BoundsScan(bounds)
    try:
        for batch in parquet.iter_batches(
            batch_size=EMB_BATCH_ROWS, columns=["emb"], use_threads=False
        ):
            emb = batch.column(0)
            null_rows += emb.null_count
            values = pc.list_flatten(emb)
            finite = pc.is_finite(values)
            if len(values) and (values.null_count or not pc.all(finite).as_py()):
                bad = pc.invert(pc.fill_null(finite, False))
                bad_in_batch = np.unique(pc.list_parent_indices(emb).filter(bad).to_numpy())
                bad_rows += bad_in_batch.size
                if first_bad is None:
                    first_bad = rows + int(bad_in_batch[0])
            matrix = emb_digests.emb_matrix(emb)
            if matrix is None:
                digests = None
                in_bounds = None
            else:
                valid = emb.is_valid().to_numpy(zero_copy_only=False) if emb.null_count else None
                if digests is not None:
                    digests.append(emb_digests.row_digests(matrix, valid))
                if in_bounds is not None:
                    in_bounds.add(matrix, valid, rows)
            rows += len(emb)
    except Exception as error:  # a page that does not decode, a type that is not a list
        return f"'emb' does not read ({error})"
    all_digests = None
    if digests is not None:
        all_digests = np.concatenate(digests) if digests else np.empty(0, np.uint64)
    return _EmbScan(rows, null_rows, bad_rows, first_bad, all_digests, in_bounds)


def _bounds_result(
    name: str, emb: _EmbScan | str, bounds: EmbBounds | None, metadata: pa.Table | str
) -> CheckResult:
    """`emb_norms_within_bounds`: failing rows named with their uuid when the uuids read."""
    if isinstance(emb, str):
        return not_run(EMB_NORMS_WITHIN_BOUNDS, name, emb)
    if bounds is None:
        return CheckResult(
            EMB_NORMS_WITHIN_BOUNDS, True, f"{name}: no emb bounds pinned for this config"
        )
    if emb.bounds is None:
        return not_run(EMB_NORMS_WITHIN_BOUNDS, name, "'emb' is not a fixed-size list of floats")
    uuid_at = None
    if not isinstance(metadata, str) and "uuid" in metadata.column_names:
        uuids = metadata.column("uuid")
        uuid_at = {row: uuids[row].as_py() for row, _, _ in emb.bounds.examples if row < len(uuids)}
    return emb_norms.bounds_result(name, emb.bounds, uuid_at)


def _emb_result(name: str, scan: _EmbScan) -> CheckResult:
    details = {
        "rows": scan.rows,
        "null_rows": scan.null_rows,
        "nonfinite_rows": scan.bad_rows,
        "first_nonfinite_row": scan.first_bad_row,
    }
    if not scan.null_rows and not scan.bad_rows:
        return CheckResult(
            EMB_FINITE, True, f"{name}: emb finite in all {scan.rows:,} rows", details
        )
    problems = []
    if scan.bad_rows:
        problems.append(
            f"{scan.bad_rows:,} rows hold NaN, Inf or NULL values (first at row {scan.first_bad_row})"
        )
    if scan.null_rows:
        problems.append(f"{scan.null_rows:,} rows have a NULL emb")
    return CheckResult(
        EMB_FINITE, False, f"{name}: emb not finite: " + "; ".join(problems), details
    )


def _rows_result(
    name: str, footer_rows: int, metadata: pa.Table | str, emb: _EmbScan | str
) -> CheckResult:
    """Rows decoded from the metadata columns and from `emb` both equal the footer's count."""
    read = {
        "metadata columns": metadata if isinstance(metadata, str) else metadata.num_rows,
        "emb": emb if isinstance(emb, str) else emb.rows,
    }
    details: dict[str, Any] = {"footer_rows": footer_rows, "read": read}
    problems = [
        count if isinstance(count, str) else f"{what} gave {count:,} rows"
        for what, count in read.items()
        if count != footer_rows and count != _EMB_MISSING
    ]
    if not problems:
        return CheckResult(
            ROWS_MATCH_FOOTER,
            True,
            f"{name}: read {footer_rows:,} rows, as the footer says",
            details,
        )
    return CheckResult(
        ROWS_MATCH_FOOTER,
        False,
        f"{name}: footer says {footer_rows:,} rows but "
        + "; ".join(problems)
        + ": the file is corrupt, fetch it again",
        details,
    )


# --- metadata: expectations and uuids ----------------------------------------------------


def _expectations(name: str, table: pa.Table) -> CheckResult:
    from tol_dagster.validation.expectations import run_metadata_suite

    return run_metadata_suite(table, label=name)


def _guarded_hashes(uuids: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """(hash of each row's uuid, uuid not NULL) in row order; None if hashing failed (the
    uuid check then reports the error)."""
    try:
        return uuid_index.uuid_row_hashes(uuids), uuids.is_valid().to_numpy(zero_copy_only=False)
    except Exception:
        return None


def _uuid_unique(
    name: str, path: Path, row_hashes: tuple[np.ndarray, np.ndarray] | None, keep: Path | None
) -> CheckResult:
    if row_hashes is None:
        raise ValueError("the uuids could not be hashed")
    hashes = np.sort(row_hashes[0][row_hashes[1]])
    if keep is not None:
        uuid_index.save_hashes(keep, hashes)
    return uuid_index.check_uuid_unique_within(name, path, hashes)


def _guarded(check: str, name: str, run: Any) -> CheckResult:
    """Run one check; an error while checking fails the check with the error, never the gate."""
    try:
        result: CheckResult = run()
    except Exception as error:
        return CheckResult(
            check, False, f"{name}: could not check ({error})", {"error": str(error)}
        )
    return result


# --- across files ------------------------------------------------------------------------


def check_sorted_across(facts_in_file_order: Sequence[FileFacts]) -> CheckResult:
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


def check_rows_match_card(total: int, expected: int | None) -> CheckResult:
    """The config's row total equals the dataset card's count, when the card states one."""
    details = {"rows": total, "card_rows": expected}
    if expected is None:
        return CheckResult(
            ROWS_MATCH_CARD, True, f"{total:,} rows; the card states no count to compare", details
        )
    if total == expected:
        return CheckResult(ROWS_MATCH_CARD, True, f"{total:,} rows, as the card says", details)
    return CheckResult(
        ROWS_MATCH_CARD,
        False,
        f"the files hold {total:,} rows but the card says {expected:,} "
        f"({total - expected:+,}): rows were dropped or added without the card",
        details,
    )


def check_row_loss(
    previous_total: int | None, new_total: int, max_share: float, accepted: bool
) -> CheckResult:
    """The new state loses at most `max_share` of the last validated state's rows, or is accepted."""
    lost = 0 if previous_total is None else max(0, previous_total - new_total)
    share = lost / previous_total if previous_total else 0.0
    details = {
        "previous_rows": previous_total,
        "rows": new_total,
        "lost_rows": lost,
        "lost_share": share,
        "max_share": max_share,
        "accepted": accepted,
    }
    if previous_total is None:
        return CheckResult(
            ROW_LOSS_WITHIN_LIMIT, True, f"{new_total:,} rows; no validated state before", details
        )
    summary = f"{lost:,} of {previous_total:,} rows lost ({share:.2%}; limit {max_share:.2%})"
    if share <= max_share:
        return CheckResult(ROW_LOSS_WITHIN_LIMIT, True, summary, details)
    if accepted:
        return CheckResult(ROW_LOSS_WITHIN_LIMIT, True, f"{summary}: accepted", details)
    return CheckResult(
        ROW_LOSS_WITHIN_LIMIT,
        False,
        f"{summary}: if upstream really removed them, rerun with --accept-row-loss or raise "
        "TOL_MAX_ROW_LOSS",
        details,
    )

"""The validation gate's pass over one file: every per-file check, and the facts kept for the
checks across files.

`inspect_file` runs right after a file's download, in a worker thread, and must keep up with a
50 MB/s download of the same file: it reads the footer, the small metadata columns once
(pyarrow), and `emb` in small streamed batches (`emb_scan`). What it learns is kept as
`FileFacts`, a small JSON document, so the checks across files (sort order at file boundaries,
row totals, uuid uniqueness) never read a parquet file again. The checks themselves live in the
modules named for them (`contract`, `row_counts`, `emb_scan`, `expectations`, `sort_order`,
`uuid_index`); this module runs them in order and keeps what they found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.schema import METADATA_COLUMNS, SORT_KEY, STRING_COLUMNS, EmbBounds
from tol_dagster.store.hashing import hashed_reads
from tol_dagster.validation import chunk_crcs, emb_digests, emb_scan, uuid_index
from tol_dagster.validation.checks import (
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    FOOTER_READS,
    METADATA_EXPECTATIONS,
    ROWS_MATCH_FOOTER,
    SCHEMA_MATCHES_CONTRACT,
    SCHEMA_MATCHES_LAST_VALIDATED,
    SHA256_MATCHES_UPSTREAM,
    SORTED_BY_CONTRACT_KEY,
    UUID_UNIQUE,
    CheckResult,
    not_run,
)
from tol_dagster.validation.contract import check_schema, describe_schema
from tol_dagster.validation.emb_scan import EmbScan
from tol_dagster.validation.expectations import run_metadata_suite
from tol_dagster.validation.row_counts import check_rows_match_footer
from tol_dagster.validation.sort_order import SortKey, check_sorted_within, key_at

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

#: The per-file checks that need the metadata columns.
_METADATA_CHECKS = (METADATA_EXPECTATIONS, SORTED_BY_CONTRACT_KEY, UUID_UNIQUE)

#: A uuid's hash in each row, and which rows' uuids are not NULL (`uuid_index.uuid_row_hashes`).
RowHashes = tuple[np.ndarray, np.ndarray]


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
        data: dict[str, object] = {field.name: getattr(self, field.name) for field in fields(self)}
        data["results"] = [result.to_dict() for result in self.results]
        return json.dumps(data, ensure_ascii=False)

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
    chunk_crcs_path: Path | None = None,
) -> FileFacts:
    """Run every per-file check on the parquet file at `path` and return what it learned.

    `actual_sha256`: the download's, streamed; None: hashed from the gate's own reads
    (`hashing.HashingFile`). `expected_sha256` None (nothing announced) passes, noted. Every
    data page is decoded once: an undecodable one fails `rows_match_footer`, a flip that still
    decodes is the sha256's (in `emb` the emb checks' too). No footer: later checks fail, not run.
    Kept for the announced bytes only: the sorted uuid hashes (`uuid_hashes_path`), each row's
    `emb` digest (`emb_digests_path`), the crc32s of each row group's `uuid` and `emb` chunks from
    the sha256's reads (`chunk_crcs_path`). `emb_bounds` None: norms pass, noted.
    """
    path = Path(path)
    name = path.name
    with hashed_reads(path, actual_sha256) as (handle, reads):
        try:
            parquet = _open(path)
            schema = parquet.schema_arrow
        except Exception as error:  # pyarrow raises several types for a broken footer
            return _unreadable_footer(path, expected_sha256, reads.sha256(), error)
        chunks = chunk_crcs.ranges(parquet.metadata)
        reads.track(chunks or [])
        metadata = _read_metadata(path, parquet, schema)
        emb = emb_scan.scan_emb(path, parquet, emb_bounds, handle)
        sha256, crcs = reads.sha256(), reads.crcs()
    results = [check_sha256(name, expected_sha256, sha256), _footer_result(name, parquet)]
    if not results[0].passed:
        uuid_hashes_path = emb_digests_path = chunk_crcs_path = None  # announced bytes only
    chunk_crcs.keep(chunk_crcs_path, chunks, crcs)
    results += _schema_results(name, schema, expected_schema, last_validated_schema)
    results.append(_rows_result(name, parquet.metadata.num_rows, metadata, emb))
    results.append(emb_scan.emb_finite_result(name, emb))
    uuids = None if isinstance(metadata, str) else _column(metadata, "uuid")
    row_hashes = None if uuids is None else _guarded_hashes(uuids)
    results.append(emb_scan.emb_norms_result(name, emb, emb_bounds, uuids))
    sorted_hashes = _save_digests(emb_digests_path, emb, row_hashes)
    results += _metadata_results(name, path, metadata, sorted_hashes, uuid_hashes_path)
    first_key, last_key = _end_keys(metadata)
    return FileFacts(
        name=name,
        sha256=sha256,
        size=path.stat().st_size,
        rows=None if isinstance(metadata, str) else metadata.num_rows,
        footer_rows=parquet.metadata.num_rows,
        row_groups=parquet.metadata.num_row_groups,
        schema=describe_schema(schema),
        first_key=first_key,
        last_key=last_key,
        results=tuple(results),
    )


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


# --- the steps of inspect_file ---------------------------------------------------------------


def _open(path: Path) -> pq.ParquetFile:
    """The file's reader; its buffer no larger than the file (zeroing 8 MiB for a file of
    0.7 MB cost as much as reading it)."""
    buffer = max(1, min(emb_scan.READ_BUFFER_BYTES, path.stat().st_size))
    return pq.ParquetFile(path, buffer_size=buffer, pre_buffer=False)


def _unreadable_footer(
    path: Path, expected_sha256: str | None, sha256: str, error: Exception
) -> FileFacts:
    """The facts of a file whose footer does not read: every check after it failed, not run."""
    name = path.name
    footer = CheckResult(
        FOOTER_READS,
        False,
        f"{name}: the parquet footer does not read ({error}); the file is truncated "
        "or not parquet: fetch it again",
        {"error": str(error)},
    )
    after_footer = PER_FILE_CHECKS[PER_FILE_CHECKS.index(FOOTER_READS) + 1 :]
    results = [
        check_sha256(name, expected_sha256, sha256),
        footer,
        *(not_run(c, name, "the footer does not read") for c in after_footer),
    ]
    return FileFacts(
        name, sha256, path.stat().st_size, None, None, None, None, None, None, tuple(results)
    )


def _footer_result(name: str, parquet: pq.ParquetFile) -> CheckResult:
    footer_rows = parquet.metadata.num_rows
    row_groups = parquet.metadata.num_row_groups
    return CheckResult(
        FOOTER_READS,
        True,
        f"{name}: footer reads: {footer_rows:,} rows in {row_groups} row groups",
        {"rows": footer_rows, "row_groups": row_groups},
    )


def _schema_results(
    name: str, found: pa.Schema, contract: pa.Schema, last_validated: pa.Schema | None
) -> list[CheckResult]:
    """`schema_matches_contract`, then `schema_matches_last_validated` (passes on a first sync)."""
    return [
        check_schema(name, found, contract, SCHEMA_MATCHES_CONTRACT),
        check_schema(name, found, last_validated, SCHEMA_MATCHES_LAST_VALIDATED)
        if last_validated is not None
        else CheckResult(
            SCHEMA_MATCHES_LAST_VALIDATED, True, f"{name}: no validated schema yet (first sync)"
        ),
    ]


#: The metadata columns the gate reads dictionary-encoded: those of few distinct values (the
#: sort key's among them, which `sort_order` ranks on their dictionaries). Ids and URLs, one
#: value per row, read faster as plain strings. 0.17 -> 0.10 CPU s for a 509 MB file, and the
#: sort check 0.044 -> 0.016 (timed on `bench/gate.py`'s file; the whole gate ~7% cheaper).
DICTIONARY_COLUMNS: tuple[str, ...] = tuple(
    c for c in STRING_COLUMNS if c not in ("source_id", "identifier")
)


def _read_metadata(path: Path, parquet: pq.ParquetFile, schema: pa.Schema) -> pa.Table | str:
    """The metadata columns the file has, or why they do not read. One thread: pyarrow's
    column threads cost more CPU than they save here (0.40 against 0.26 CPU s per GB), and the
    gate already runs beside downloads and other files' gates. Each of their column chunks is
    read whole (a few MB), not through `emb`'s streaming buffer: that cost as much again.
    Columns of few values stay dictionary-encoded (DICTIONARY_COLUMNS): every page is still
    decoded, but no string is made per row."""
    try:
        whole_chunks = pq.ParquetFile(
            path,
            metadata=parquet.metadata,
            pre_buffer=False,
            read_dictionary=[c for c in DICTIONARY_COLUMNS if c in schema.names],
        )
        return whole_chunks.read(
            columns=[c for c in METADATA_COLUMNS if c in schema.names], use_threads=False
        )
    except Exception as error:
        return f"the metadata columns do not read ({error})"


def _rows_result(
    name: str, footer_rows: int, metadata: pa.Table | str, emb: EmbScan | str
) -> CheckResult:
    """Rows decoded from the metadata columns and from `emb` both equal the footer's count."""
    read = {
        "metadata columns": metadata if isinstance(metadata, str) else metadata.num_rows,
        "emb": emb if isinstance(emb, str) else emb.rows,
    }
    return check_rows_match_footer(name, footer_rows, read, not_ours=(emb_scan.EMB_MISSING,))


def _column(table: pa.Table, column: str) -> pa.ChunkedArray | None:
    return table.column(column) if column in table.column_names else None


def _guarded_hashes(uuids: pa.ChunkedArray) -> RowHashes | None:
    """(hash of each row's uuid, uuid not NULL) in row order; None if hashing failed (the
    uuid check then reports the error)."""
    try:
        return uuid_index.uuid_row_hashes(uuids), uuids.is_valid().to_numpy(zero_copy_only=False)
    except Exception:
        return None


def _save_digests(
    path: Path | None, emb: EmbScan | str, row_hashes: RowHashes | None
) -> np.ndarray | None:
    """Keep the file's (uuid hash, emb digest, row) table at `path`, if one is given and both
    passes gave every row. Returns the non-NULL uuids' hashes sorted (None if the uuids could
    not be hashed): the table's first row when it was made, so they are sorted once."""
    if row_hashes is None:
        return None
    if (
        path is not None
        and isinstance(emb, EmbScan)
        and emb.digests is not None
        and emb.digests.size == row_hashes[0].size
    ):
        table = emb_digests.digest_table(*row_hashes, emb.digests)
        emb_digests.save_table(path, table, sync_dir=False)
        return table[0]
    return np.sort(row_hashes[0][row_hashes[1]])


def _metadata_results(
    name: str,
    path: Path,
    table: pa.Table | str,
    sorted_hashes: np.ndarray | None,
    hashes_path: Path | None,
) -> list[CheckResult]:
    """The checks on the metadata columns (`table`, or why they did not read): the
    expectations, the sort, uuid uniqueness."""
    if isinstance(table, str):
        return [not_run(check, name, table) for check in _METADATA_CHECKS]
    results = [_guarded(METADATA_EXPECTATIONS, name, lambda: run_metadata_suite(table, label=name))]
    missing = [c for c in SORT_KEY if c not in table.column_names]
    if missing:
        results.append(not_run(SORTED_BY_CONTRACT_KEY, name, f"columns {missing} missing"))
    else:
        keys = table.select(list(SORT_KEY))
        results.append(
            _guarded(SORTED_BY_CONTRACT_KEY, name, lambda: check_sorted_within(name, keys))
        )
    results.append(
        _guarded(UUID_UNIQUE, name, lambda: _uuid_unique(name, path, sorted_hashes, hashes_path))
        if "uuid" in table.column_names
        else not_run(UUID_UNIQUE, name, "column 'uuid' missing")
    )
    return results


def _end_keys(metadata: pa.Table | str) -> tuple[SortKey | None, SortKey | None]:
    """The sort keys of the file's first and last rows (None without rows or key columns)."""
    if isinstance(metadata, str) or metadata.num_rows == 0:
        return None, None
    if any(c not in metadata.column_names for c in SORT_KEY):
        return None, None
    keys = metadata.select(list(SORT_KEY))
    return key_at(keys, 0), key_at(keys, keys.num_rows - 1)


def _uuid_unique(
    name: str, path: Path, hashes: np.ndarray | None, hashes_path: Path | None
) -> CheckResult:
    """`uuid_unique` within the file, on its non-NULL uuids' hashes sorted; they are kept at
    `hashes_path` for the check across files."""
    if hashes is None:
        raise ValueError("the uuids could not be hashed")
    if hashes_path is not None:
        uuid_index.save_hashes(hashes_path, hashes, sync_dir=False)
    return uuid_index.check_uuid_unique_within(name, path, hashes)


def _guarded(check: str, name: str, run: Callable[[], CheckResult]) -> CheckResult:
    """Run one check; an error while checking fails the check with the error, never the gate."""
    try:
        return run()
    except Exception as error:
        return CheckResult(
            check, False, f"{name}: could not check ({error})", {"error": str(error)}
        )

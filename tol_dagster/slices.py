"""Per-taxon slices: locate the rows with the taxon index, filter exactly, stream them to a file
with the mirror's exact schema and order, publish it atomically; and the slices' checks.

How, and why (bench/slices.py measures it against the dataset card's DuckDB COPY):
- The taxon index names the row groups of a taxon and the file-relative row span in each.
  Spans are merged into ranges; pyarrow decodes only the row groups of a range and stops at its
  end. The key's own filter (`to_arrow_filter`, the same predicate as the SQL one) decides
  which rows belong: the index is only a locator. Without an index, DuckDB finds the spans
  from the filter columns alone (it skips `emb`), then the same reader runs.
- pyarrow reads `fixed_size_list<halffloat>` as is, ~2x cheaper than DuckDB's decode into
  `list<float>` plus a cast back, and the type is exact by construction.
- Reading (a worker thread) and writing (the caller's thread) overlap; both release the GIL.
  Batches stream, so memory is bounded by a few row groups whatever the slice's size.
- Writer settings for speed: ZSTD level 1 on the string columns, dictionary and statistics off
  for `emb`, and `emb` uncompressed unless ZSTD would shrink it by over 10%
  (float16 embeddings barely compress; the first batch decides).
- The sha256 is computed on the bytes as they are written; the file is fsynced under a temp
  name and renamed into place, so a reader sees the old slice or the new one, never half of
  one. `verify` runs the blocking checks on the temp file: a failing slice never replaces a
  good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.checks import CheckResult
from tol_dagster.durable import TEMP_PREFIX, TEMP_SUFFIX, fsync_dir
from tol_dagster.errors import StoreError, ValidationFailed
from tol_dagster.mirror_files import MirrorFile
from tol_dagster.schema import METADATA_COLUMNS, STRING_COLUMNS
from tol_dagster.slice_keys import (
    SliceKey,
    parse_slice_key,
    split_binomial,
    to_arrow_filter,
    to_sql_filter,
)
from tol_dagster.taxon_index import lookup
from tol_dagster.validation import schema_differences

#: The slices' blocking checks, named as the predicate they assert.
ROWS_MATCH_SUMMARY = "rows_match_summary"
ROWS_SATISFY_KEY = "rows_satisfy_key"
UUIDS_UNIQUE = "uuids_unique"
SCHEMA_MATCHES_MIRROR = "schema_matches_mirror"

#: Rows per batch read and per output row group: ~25 MB of float16 `emb` at 768 dims.
ROW_GROUP_ROWS = 16_384
#: Batches the reader thread may run ahead of the writer.
READ_AHEAD = 2
#: ZSTD level of every compressed column: level 3 costs more and saves little here.
ZSTD_LEVEL = 1
#: `emb` stays uncompressed while compression would shrink the file by less than this.
EMB_MIN_GAIN = 0.10
#: Bytes of the first batch's `emb` values tried with ZSTD to decide `emb`'s codec.
_PROBE_BYTES = 4 * 1024 * 1024
#: The parquet leaf of `emb` (pyarrow names a list's leaf `<column>.list.element`).
EMB_COLUMN = "emb"
EMB_LEAF = "emb.list.element"

#: file name -> row group -> (row_start, row_end), file-relative rows, end exclusive.
Spans = dict[str, dict[int, tuple[int, int]]]
Verify = Callable[[Path], Sequence[CheckResult]]
T = TypeVar("T")


@dataclass(frozen=True)
class Scan:
    """What to read of one mirror file: merged file-relative row ranges and their row groups."""

    file: MirrorFile
    ranges: tuple[tuple[int, int], ...]
    row_groups: tuple[int, ...]


@dataclass(frozen=True)
class SliceResult:
    """What `extract_slice` published, and what it cost."""

    key: str
    path: Path
    rows: int
    bytes: int
    sha256: str
    source_files: tuple[str, ...]
    row_groups_read: int
    seconds: float
    emb_compression: str
    warnings: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()


def extract_slice(
    key: SliceKey,
    files: Sequence[MirrorFile],
    index: pa.Table | None,
    out: Path,
    *,
    schema: pa.Schema,
    verify: Verify | None = None,
) -> SliceResult:
    """Write the rows of `files` (in mirror order) that satisfy `key` to `out`, atomically.

    `index` None finds the rows without it (correct, slower). `verify` gets the finished temp
    file; if any of its checks fails, `ValidationFailed` is raised and `out` is left as it was.
    A taxon with no rows gives a 0-row file with the full schema and a warning.
    """
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scans = plan_scans(key, files, index)
    per_file = {scan.file.name: 0 for scan in scans}
    fd, temp_name = tempfile.mkstemp(
        dir=out.parent, prefix=f"{TEMP_PREFIX}{out.name}.", suffix=TEMP_SUFFIX
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            sink = _HashingSink(handle)
            batches = _prefetch(_read(key, scans, schema), READ_AHEAD)
            codec = _write(_counted(batches, per_file), sink, schema)
            handle.flush()
            os.fsync(handle.fileno())
        checks = tuple(verify(temp)) if verify is not None else ()
        failed = [c for c in checks if not c.passed]
        if failed:
            raise ValidationFailed(
                f"slice {key.name}: not published, {out} is unchanged:\n"
                + "\n".join(c.message for c in failed)
            )
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(out.parent)
    rows = sum(per_file.values())
    warnings = () if rows else (f"slice {key.name}: no rows in the mirror match; wrote 0 rows",)
    return SliceResult(
        key=key.name,
        path=out,
        rows=rows,
        bytes=sink.size,
        sha256=sink.digest.hexdigest(),
        source_files=tuple(name for name, count in per_file.items() if count),
        row_groups_read=sum(len(scan.row_groups) for scan in scans),
        seconds=time.perf_counter() - started,
        emb_compression=codec,
        warnings=warnings,
        checks=checks,
    )


def plan_scans(key: SliceKey, files: Sequence[MirrorFile], index: pa.Table | None) -> list[Scan]:
    """What to read for `key`, in mirror order: from the index, else from a filter-column scan."""
    spans = None if index is None else locate(key, index)
    if spans is None:
        spans = _spans_by_scan(key, files)
    by_name = {f.name for f in files}
    unknown = sorted(set(spans) - by_name)
    if unknown:
        raise StoreError(
            f"the taxon index names {unknown[0]}, which is not in the mirror: the index is "
            "older than the mirror; rebuild it (materialize the config's taxon_index)"
        )
    return [
        Scan(f, _merge(spans[f.name].values()), tuple(sorted(spans[f.name])))
        for f in files
        if f.name in spans
    ]


def locate(key: SliceKey, index: pa.Table) -> Spans | None:
    """The row spans, by file and row group, that hold every row satisfying `key`.

    A row satisfying all conditions lies in every condition's spans, so a path key reads their
    intersection. None when no condition can be located (a one-word `species` value alone:
    rows without a genus are not indexed under `species`).
    """
    located = [
        _spans(index, rank, value) for rank, value in key.conditions if _locatable(rank, value)
    ]
    if not located:
        return None
    result: Spans = {}
    for file, groups in located[0].items():
        for group, (start, stop) in groups.items():
            for other in located[1:]:
                if group not in other.get(file, {}):
                    break
                start, stop = max(start, other[file][group][0]), min(stop, other[file][group][1])
            else:
                if start < stop:
                    result.setdefault(file, {})[group] = (start, stop)
    return result


def expected_count(key: SliceKey, index: pa.Table | None, files: Sequence[MirrorFile]) -> int:
    """Rows of the mirror that satisfy `key`: summed from the index where its entries are
    exactly the key's rows, else counted by DuckDB from the filter columns of what the index
    names (every file without an index)."""
    if index is not None and len(key.conditions) == 1 and _index_counts_exactly(*key.conditions[0]):
        rank, value = key.conditions[0]
        return sum(entry.rows for entry in lookup(index, rank, value))
    where, params = to_sql_filter(key)
    spans = None if index is None else locate(key, index)
    if spans is None:
        return _count(
            f"SELECT count(*) FROM read_parquet(?) WHERE {where}",
            [[str(f.path) for f in files], *params],
        )
    total = 0
    for scan in plan_scans(key, files, index):
        for start, stop in scan.ranges:
            total += _count(
                f"SELECT count(*) FROM read_parquet(?) WHERE file_row_number >= ? "
                f"AND file_row_number < ? AND {where}",
                [str(scan.file.path), start, stop, *params],
            )
    return total


def slice_checks(
    path: Path, key: SliceKey, expected_rows: int, mirror_schema: pa.Schema
) -> list[CheckResult]:
    """Every blocking check of a slice file (pass as `verify` to check before publishing)."""
    return [
        check_rows_match_summary(path, key, expected_rows),
        check_rows_satisfy_key(path, key),
        check_uuids_unique(path, key),
        check_schema_matches(path, mirror_schema, key),
    ]


def check_rows_match_summary(path: Path, key: SliceKey, expected: int) -> CheckResult:
    """The slice has as many rows as the mirror holds for its taxon."""
    rows = pq.read_metadata(path).num_rows
    details = {"rows": rows, "expected": expected}
    if rows == expected:
        return CheckResult(
            ROWS_MATCH_SUMMARY, True, f"slice {key.name}: {rows:,} rows, as counted", details
        )
    return CheckResult(
        ROWS_MATCH_SUMMARY,
        False,
        f"slice {key.name}: {rows:,} rows but the mirror counts {expected:,}: the taxon index "
        "may be older than the mirror; rebuild the taxon index, then the slice",
        details,
    )


def check_rows_satisfy_key(path: Path, key: SliceKey) -> CheckResult:
    """Every row of the slice satisfies its key (a NULL in a keyed column does not)."""
    where, params = to_sql_filter(key)
    with duck.cursor() as con:
        bad = con.execute(
            f"SELECT uuid FROM read_parquet(?) WHERE NOT coalesce(({where}), false)",
            [str(path), *params],
        ).fetchall()
    details: dict[str, Any] = {"violations": len(bad), "first": [row[0] for row in bad[:5]]}
    if not bad:
        return CheckResult(
            ROWS_SATISFY_KEY, True, f"slice {key.name}: every row satisfies the key", details
        )
    return CheckResult(
        ROWS_SATISFY_KEY,
        False,
        f"slice {key.name}: {len(bad):,} rows do not satisfy the key (first uuids "
        f"{details['first']}); rebuild the slice",
        details,
    )


def check_uuids_unique(path: Path, key: SliceKey) -> CheckResult:
    """No uuid appears twice in the slice."""
    with duck.cursor() as con:
        dups = con.execute(
            "SELECT uuid, count(*) AS n FROM read_parquet(?) GROUP BY uuid HAVING n > 1 "
            "ORDER BY n DESC, uuid",
            [str(path)],
        ).fetchall()
    details: dict[str, Any] = {"duplicated": len(dups), "first": [row[0] for row in dups[:5]]}
    if not dups:
        return CheckResult(UUIDS_UNIQUE, True, f"slice {key.name}: uuids are unique", details)
    return CheckResult(
        UUIDS_UNIQUE,
        False,
        f"slice {key.name}: {len(dups):,} uuids appear more than once (first "
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


def affected_slices(
    keys: Iterable[str | SliceKey],
    old_index: pa.Table | None,
    new_index: pa.Table,
    changed_files: set[str],
    *,
    built: Iterable[str] | None = None,
) -> list[str]:
    """Canonical names of the slices to rebuild after a resync, in the order of `keys`.

    A slice is affected when its taxon has rows, by the old or the new index, in a file that
    changed, appeared or disappeared (`changed_files`, by file name). Keys not in `built`
    (when given) and every key when there is no old index are included: never built.
    """
    done = None if built is None else {parse_slice_key(str(b)).name for b in built}
    names: dict[str, None] = {}
    for item in keys:
        key = item if isinstance(item, SliceKey) else parse_slice_key(item)
        fresh = old_index is None or (done is not None and key.name not in done)
        if fresh or any(
            _touches(key, index, changed_files) for index in (old_index, new_index) if index
        ):
            names[key.name] = None
    return list(names)


# --- locating -------------------------------------------------------------------------------


def _locatable(rank: str, value: str) -> bool:
    """The index holds every row of this condition (one-word `species` values it cannot)."""
    return rank != "species" or split_binomial(value) is not None


def _index_counts_exactly(rank: str, value: str) -> bool:
    """The index's rows for (rank, value) are exactly the rows the key's filter keeps.

    For `species` the index's value is the species column when it holds a space, else genus +
    epithet: the same as the key's filter unless the epithet itself holds a space.
    """
    if rank != "species":
        return True
    parts = split_binomial(value)
    return parts is not None and " " not in parts[1]


def _spans(index: pa.Table, rank: str, value: str) -> Spans:
    """The spans of the index entries that may hold rows with `rank` = `value`."""
    values = [value]
    parts = split_binomial(value) if rank == "species" else None
    if parts is not None and " " in parts[1]:
        values.append(parts[1])  # such rows are indexed under the species column as is
    spans: Spans = {}
    for v in values:
        for entry in lookup(index, rank, v):
            _widen(spans, entry.file, entry.row_group, entry.row_start, entry.row_end)
    return spans


def _spans_by_scan(key: SliceKey, files: Sequence[MirrorFile]) -> Spans:
    """The spans of `key`'s rows found by DuckDB from the filter columns (it skips `emb`)."""
    where, params = to_sql_filter(key)
    spans: Spans = {}
    with duck.cursor() as con:
        for file in files:
            rows = con.execute(
                f"SELECT file_row_number FROM read_parquet(?) WHERE {where}",
                [str(file.path), *params],
            ).fetchnumpy()["file_row_number"]
            if len(rows):
                starts = _row_group_starts(pq.read_metadata(file.path))
                groups = np.searchsorted(starts, rows, side="right") - 1
                for group in np.unique(groups):
                    members = rows[groups == group]
                    _widen(spans, file.name, int(group), int(members.min()), int(members.max()) + 1)
    return spans


def _widen(spans: Spans, file: str, group: int, start: int, stop: int) -> None:
    groups = spans.setdefault(file, {})
    old_start, old_stop = groups.get(group, (start, stop))
    groups[group] = (min(start, old_start), max(stop, old_stop))


def _merge(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted spans, touching ones joined: one read each."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return tuple(merged)


def _touches(key: SliceKey, index: pa.Table, changed_files: set[str]) -> bool:
    spans = locate(key, index)
    return bool(changed_files) if spans is None else not changed_files.isdisjoint(spans)


def _row_group_starts(metadata: pq.FileMetaData) -> np.ndarray:
    """First file-relative row of each row group."""
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _count(query: str, params: list[Any]) -> int:
    with duck.cursor() as con:
        row = con.execute(query, params).fetchone()
    return int(row[0]) if row else 0


# --- reading and writing ----------------------------------------------------------------------


def _read(
    key: SliceKey, scans: Sequence[Scan], schema: pa.Schema
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(file name, batch) of the rows satisfying `key`, in mirror order.

    pyarrow decodes only a range's row groups and stops at the range's end; rows of its first
    row group before the range are decoded and dropped (parquet pages cannot be skipped here).
    """
    predicate = to_arrow_filter(key)
    for scan in scans:
        parquet = pq.ParquetFile(scan.file.path)
        starts = _row_group_starts(parquet.metadata)
        for start, stop in scan.ranges:
            first = int(np.searchsorted(starts, start, side="right")) - 1
            last = int(np.searchsorted(starts, stop - 1, side="right")) - 1
            position = int(starts[first])
            batches = parquet.iter_batches(
                batch_size=ROW_GROUP_ROWS, row_groups=range(first, last + 1), columns=schema.names
            )
            for batch in batches:
                low, high = max(start, position), min(stop, position + batch.num_rows)
                position += batch.num_rows
                if low < high:
                    part = batch.slice(low - (position - batch.num_rows), high - low)
                    part = part.filter(predicate)
                    if part.num_rows:
                        yield scan.file.name, part
                if position >= stop:
                    break


def _counted(
    items: Iterator[tuple[str, pa.RecordBatch]], per_file: dict[str, int]
) -> Iterator[pa.RecordBatch]:
    for name, batch in items:
        per_file[name] += batch.num_rows
        yield batch


@dataclass(frozen=True)
class _Raised:
    error: BaseException


_END = object()


def _prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced by a worker thread up to `depth` ahead: reading overlaps writing."""
    slots: queue.Queue[object] = queue.Queue(depth)
    cancelled = threading.Event()

    def put(item: object) -> bool:
        while not cancelled.is_set():
            with contextlib.suppress(queue.Full):
                slots.put(item, timeout=0.1)
                return True
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:
            put(_Raised(error))

    worker = threading.Thread(target=work, name="slice-reader", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        worker.join()


def _write(batches: Iterator[pa.RecordBatch], sink: _HashingSink, schema: pa.Schema) -> str:
    """Write `batches` as parquet in row groups of ~ROW_GROUP_ROWS; returns `emb`'s codec."""
    first = next(batches, None)
    codec = "none" if first is None else _emb_codec(first)
    with _writer(sink, schema, codec) as writer:
        pending: list[pa.RecordBatch] = []
        for batch in itertools.chain([] if first is None else [first], batches):
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending))
                pending = []
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
    return codec


def _emb_codec(batch: pa.RecordBatch) -> str:
    """'zstd' if ZSTD shrinks a sample of `emb`'s bytes by more than EMB_MIN_GAIN, else 'none'."""
    if EMB_COLUMN not in batch.schema.names:
        return "none"
    values = batch.column(EMB_COLUMN).flatten()
    width = values.type.byte_width
    sample = values.buffers()[1][values.offset * width :][:_PROBE_BYTES]
    compressed = pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(sample)
    grows = sample.size / max(compressed.size, 1) - 1
    return "zstd" if grows >= EMB_MIN_GAIN else "none"


@contextlib.contextmanager
def _writer(sink: _HashingSink, schema: pa.Schema, emb_codec: str) -> Iterator[pq.ParquetWriter]:
    compression = {name: "zstd" for name in schema.names if name != EMB_COLUMN}
    compression[EMB_LEAF] = emb_codec
    writer = pq.ParquetWriter(
        sink,
        schema,
        compression=compression,
        compression_level={c: ZSTD_LEVEL for c, codec in compression.items() if codec == "zstd"},
        use_dictionary=[name for name in schema.names if name in STRING_COLUMNS],
        write_statistics=[name for name in schema.names if name in METADATA_COLUMNS],
        write_page_index=True,
    )
    try:
        yield writer
    finally:
        writer.close()


@dataclass
class _HashingSink:
    """A write-only file that hashes the bytes on their way out (no second read of the slice)."""

    handle: Any
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    closed: bool = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.handle.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True  # the caller fsyncs and closes the real file


__all__ = [
    "ROWS_MATCH_SUMMARY",
    "ROWS_SATISFY_KEY",
    "SCHEMA_MATCHES_MIRROR",
    "UUIDS_UNIQUE",
    "Scan",
    "SliceResult",
    "Spans",
    "affected_slices",
    "check_rows_match_summary",
    "check_rows_satisfy_key",
    "check_schema_matches",
    "check_uuids_unique",
    "expected_count",
    "extract_slice",
    "locate",
    "plan_scans",
    "slice_checks",
]

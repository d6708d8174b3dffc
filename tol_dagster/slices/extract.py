"""Per-taxon slices: locate the rows with the taxon index, filter exactly, stream them to a file
with the mirror's exact schema and order, publish it atomically; and the slices' checks.

How, and why (bench/slices.py measures it against the dataset card's DuckDB COPY):
- The taxon index names the row groups of a taxon, the file-relative row span in each and
  how many of its rows match. Spans are merged into ranges. The key's own filter decides which
  rows belong: the index is only a locator. Without an index, DuckDB finds the spans from the
  filter columns alone (it skips `emb`), then the same reader runs.
- A row group whose every row satisfies the key is copied as bytes (`parquet_bytes.Splicer`):
  no decoding, no encoding, only the footer is rebuilt. That is what makes a large slice cheap.
- The rest of a range is read row group by row group through the offset index
  (`parquet_bytes.read_rows`): only the pages holding the range's rows are decoded, where
  pyarrow and DuckDB would decode (or decompress and skip) everything before them; a 50k-row
  row group's `emb` is ~75 MB. That is what makes a small slice cheap. Files without an offset
  index fall back: a dense range (matches at least `DENSE_SHARE` of the rows to decode) is
  decoded by pyarrow from its row group's start, a sparse one goes through DuckDB restricted by
  `file_row_number` (it skips the `emb` of non-matching rows), its `list<float>` cast back.
- pyarrow reads `fixed_size_list<halffloat>` ~2x cheaper per row than DuckDB decodes it into
  `list<float>` and a cast brings it back. Every path filters with the key's own predicate
  (`to_arrow_filter`, or `to_sql_filter` in DuckDB).
- Reading (a worker thread, with PAGE_WORKERS chunks of pages decoded at once) and writing
  (the caller's thread) overlap; pyarrow releases the GIL. Batches stream, so memory is
  bounded (under 1 GB measured, a whole kingdom included) whatever the slice's size.
- Writer settings for speed: ZSTD level 1 on the string columns, dictionary and statistics off
  for `emb`, and `emb` uncompressed unless that makes it 10% or more bigger than ZSTD would
  (float16 embeddings barely compress: ~9% here; the first batch decides). Copied row
  groups keep the mirror's codec.
- The sha256 is computed on the bytes as they are written; the file is fsynced under a temp
  name and renamed into place, so a reader sees the old slice or the new one, never half of
  one. `verify` runs the blocking checks on the temp file: a failing slice never replaces a
  good one.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import hashlib
import logging
import mmap
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.taxon_index import lookup
from tol_dagster.errors import EmptySliceError, StoreError, ValidationFailed
from tol_dagster.schema import METADATA_COLUMNS, STRING_COLUMNS, quote_ident
from tol_dagster.slices.keys import (
    SliceKey,
    filter_columns,
    parse_slice_key,
    split_binomial,
    to_arrow_filter,
    to_sql_filter,
)
from tol_dagster.slices.parquet_bytes import (
    Footer,
    SpliceError,
    Splicer,
    decode_rows,
    parse_footer,
    read_footer,
    read_rows,
)
from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX, fsync_dir, make_public
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import CheckResult

logger = logging.getLogger("tol_dagster.slices.extract")

#: Close matches named when a key's taxon has no rows.
CLOSE_MATCHES = 5
#: difflib's similarity cutoff for a close match (its default).
CLOSE_MATCH_CUTOFF = 0.6

#: Rows per batch read and per output row group: ~25 MB of float16 `emb` at 768 dims.
ROW_GROUP_ROWS = 16_384
#: Bytes of encoded rows held in memory before they are spliced into the output.
SEGMENT_BYTES = 64 * 1024 * 1024
#: Batches the reader thread may run ahead of the writer.
READ_AHEAD = 2
#: ZSTD level of every compressed column: level 3 costs more and saves little here.
ZSTD_LEVEL = 1
#: `emb` is written uncompressed when that makes it less than this much bigger than ZSTD would.
EMB_MIN_GAIN = 0.10
#: Bytes of the first batch's `emb` values tried with ZSTD to decide `emb`'s codec.
_PROBE_BYTES = 4 * 1024 * 1024
#: The parquet leaf of `emb` (pyarrow names a list's leaf `<column>.list.element`).
EMB_COLUMN = "emb"
EMB_LEAF = "emb.list.element"

#: Read a range with pyarrow when its matches are at least this share of the rows it decodes.
DENSE_SHARE = 0.4
#: Read partial row groups page by page through the offset index (tests turn it off).
PAGE_READS = True
#: Chunks of pages read at once (pyarrow releases the GIL while it decodes).
PAGE_WORKERS = 2


class Span(NamedTuple):
    """File-relative rows [start, stop) holding up to `rows` matches."""

    start: int
    stop: int
    rows: int


class Copy(NamedTuple):
    """Row group `row_group`, all `rows` of which satisfy the key: copied as bytes."""

    row_group: int
    rows: int


#: file name -> row group -> the span of that row group that may hold matches.
Spans = dict[str, dict[int, Span]]
Verify = Callable[[Path], Sequence[CheckResult]]
T = TypeVar("T")


@dataclass(frozen=True)
class Scan:
    """What to read of one mirror file, in order: row groups to copy whole, and merged
    file-relative row ranges to filter; `row_groups` are all the row groups they touch."""

    file: MirrorFile
    pieces: tuple[Span | Copy, ...]
    row_groups: tuple[int, ...]


@dataclass(frozen=True)
class SliceResult:
    """What `extract_slice` published, and what it cost. `emb_compression` is the codec of the
    rows it wrote; copied row groups keep the mirror's."""

    key: str
    path: Path
    rows: int
    bytes: int
    sha256: str
    source_files: tuple[str, ...]
    row_groups_read: int
    row_groups_copied: int
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
    scans = _copyable(plan_scans(key, files, index), schema)
    spliced = any(isinstance(piece, Copy) for scan in scans for piece in scan.pieces)
    per_file = {scan.file.name: 0 for scan in scans}
    temp = _temp_path(out)
    try:
        reader = contextlib.closing(_prefetch(_read(key, scans, schema), READ_AHEAD))
        with _jemalloc(), open(temp, "wb") as handle, reader as items:
            sink = _HashingSink(handle)
            codec = _write(_counted(items, per_file), sink, schema, spliced)
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
        row_groups_copied=sum(isinstance(p, Copy) for scan in scans for p in scan.pieces),
        seconds=time.perf_counter() - started,
        emb_compression=codec,
        warnings=warnings,
        checks=checks,
    )


def plan_scans(key: SliceKey, files: Sequence[MirrorFile], index: pa.Table | None) -> list[Scan]:
    """What to read for `key`, in mirror order: from the index, else from a filter-column scan.

    A row group is copied whole when its span covers it and counts all its rows as matches,
    which is certain only where the spans' counts are exact for every condition.
    """
    spans = None if index is None else locate(key, index)
    exact = spans is None or all(
        _locatable(rank, value) and _index_counts_exactly(rank, value)
        for rank, value in key.conditions
    )
    if spans is None:
        spans = _spans_by_scan(key, files)
    by_name = {f.name for f in files}
    unknown = sorted(set(spans) - by_name)
    if unknown:
        raise StoreError(
            f"the taxon index names {unknown[0]}, which is not in the mirror: the index is "
            "older than the mirror; rebuild it (materialize the config's taxon_index)"
        )
    return [_scan(f, spans[f.name], exact) for f in files if f.name in spans]


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
        for group, span in groups.items():
            for other in located[1:]:
                if group not in other.get(file, {}):
                    break
                more = other[file][group]
                span = Span(
                    max(span.start, more.start),
                    min(span.stop, more.stop),
                    min(span.rows, more.rows),
                )
            else:
                if span.start < span.stop:
                    result.setdefault(file, {})[group] = span
    return result


def expected_count(key: SliceKey, index: pa.Table | None, files: Sequence[MirrorFile]) -> int:
    """Rows of the mirror that satisfy `key`: summed from the index where its entries are
    exactly the key's rows, else counted by DuckDB from the filter columns of what the index
    names (every file without an index)."""
    if index is not None and len(key.conditions) == 1 and _index_counts_exactly(*key.conditions[0]):
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
            if isinstance(piece, Copy):
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
            _touches(key, index, changed_files)
            for index in (old_index, new_index)
            if index is not None
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
            _widen(
                spans, entry.file, entry.row_group, Span(entry.row_start, entry.row_end, entry.rows)
            )
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
                    span = Span(int(members.min()), int(members.max()) + 1, len(members))
                    _widen(spans, file.name, int(group), span)
    return spans


def _widen(spans: Spans, file: str, group: int, span: Span) -> None:
    """Add `span` to a row group's span (two values of one key may share a row group)."""
    groups = spans.setdefault(file, {})
    old = groups.get(group)
    if old is not None:
        span = Span(min(span.start, old.start), max(span.stop, old.stop), span.rows + old.rows)
    groups[group] = span


def _scan(file: MirrorFile, spans: dict[int, Span], exact: bool) -> Scan:
    """The pieces of one file: whole row groups to copy (if `exact`), touching spans merged."""
    meta = pq.read_metadata(file.path)
    starts = _row_group_starts(meta)
    pieces: list[Span | Copy] = []
    for group in sorted(spans):
        span = spans[group]
        size = meta.row_group(group).num_rows
        last = pieces[-1] if pieces else None
        if exact and span == (starts[group], starts[group] + size, size):
            pieces.append(Copy(group, size))
        elif isinstance(last, Span) and span.start <= last.stop:
            pieces[-1] = Span(last.start, max(span.stop, last.stop), last.rows + span.rows)
        else:
            pieces.append(span)
    return Scan(file, tuple(pieces), tuple(sorted(spans)))


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


_Rows = TypeVar("_Rows", pa.Table, pa.RecordBatch)
#: What the reader hands the writer: rows to write, or a row group to copy, of a mirror file.
_Item = tuple[MirrorFile, pa.RecordBatch | Copy]


def _read(key: SliceKey, scans: Sequence[Scan], schema: pa.Schema) -> Iterator[_Item]:
    """The rows satisfying `key` in mirror order: row groups to copy, and batches of the
    ranges, read page by page where the file has an offset index (PAGE_WORKERS chunks at a
    time), else by pyarrow when dense and DuckDB when sparse (see the module's docstring)."""
    window: deque[tuple[MirrorFile, Future[list[pa.RecordBatch]]]] = deque()

    def ready(limit: int) -> Iterator[_Item]:
        """The results of the oldest chunks, in order, until at most `limit` are pending."""
        while len(window) > limit:
            file, chunk = window.popleft()
            for batch in chunk.result():
                yield file, batch

    pool = ThreadPoolExecutor(PAGE_WORKERS, thread_name_prefix="slice-pages")
    try:
        for file, job in _jobs(key, scans, schema):
            if isinstance(job, functools.partial):
                window.append((file, pool.submit(job)))
                yield from ready(PAGE_WORKERS)
            else:
                yield from ready(0)
                if isinstance(job, Copy):
                    yield file, job
                else:
                    yield from ((file, batch) for batch in job)
        yield from ready(0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: A piece of work for `_read`: a row group to copy, a chunk of pages to read (run in the
#: pool), or batches to read in order.
_Job = Copy | functools.partial[list[pa.RecordBatch]] | Iterator[pa.RecordBatch]


def _jobs(
    key: SliceKey, scans: Sequence[Scan], schema: pa.Schema
) -> Iterator[tuple[MirrorFile, _Job]]:
    predicate = _Predicate(key)
    where, params = to_sql_filter(key)
    columns = ", ".join(quote_ident(name) for name in schema.names)
    with duck.cursor() as con:
        for scan in scans:
            parquet = pq.ParquetFile(scan.file.path)
            starts = _row_group_starts(parquet.metadata)
            footer = _page_indexed(scan)
            for span in scan.pieces:
                if isinstance(span, Copy):
                    yield scan.file, span
                    continue
                first = int(np.searchsorted(starts, span.start, side="right")) - 1
                if footer is not None:
                    for group, low, high in _chunks(starts, first, span):
                        read = functools.partial(
                            _page_chunk, footer, group, low, high, predicate, schema
                        )
                        yield scan.file, read
                elif span.rows >= DENSE_SHARE * (span.stop - starts[first]):
                    yield scan.file, _decode(parquet, starts, first, span, predicate, schema)
                else:
                    query = (
                        f"SELECT {columns} FROM read_parquet(?) WHERE file_row_number >= ? "
                        f"AND file_row_number < ? AND {where}"
                    )
                    relation = con.sql(
                        query, params=[str(scan.file.path), span.start, span.stop, *params]
                    )
                    # DuckDB's floats are the mirror's halves widened: narrowing is exact.
                    yield (
                        scan.file,
                        (
                            b.cast(schema, safe=False)
                            for b in relation.to_arrow_reader(ROW_GROUP_ROWS)
                            if b.num_rows
                        ),
                    )


class _Predicate:
    """The key's filter applied to the key's columns only: rows are taken (copied) only when
    some are dropped, so a batch wholly inside the taxon passes untouched."""

    def __init__(self, key: SliceKey) -> None:
        self.expression = to_arrow_filter(key)
        self.columns = filter_columns(key)

    def keep(self, rows: _Rows) -> _Rows:
        keys = pa.table([rows.column(c) for c in self.columns], names=self.columns)
        keys = keys.append_column("row", pa.array(np.arange(rows.num_rows)))
        kept = keys.filter(self.expression).column("row").combine_chunks()
        return rows if len(kept) == rows.num_rows else rows.take(kept)


def _page_indexed(scan: Scan) -> Footer | None:
    """The footer of `scan`'s file if its partial row groups can be read page by page."""
    if not PAGE_READS:
        return None
    try:
        footer = read_footer(scan.file.path)
        footer.top_level_fields()
    except SpliceError:
        return None
    return footer if all(footer.has_offset_index(g) for g in scan.row_groups) else None


def _chunks(starts: np.ndarray, first: int, span: Span) -> Iterator[tuple[int, int, int]]:
    """(row group, start, stop) relative to the row group: `span` cut at row-group boundaries
    and every ROW_GROUP_ROWS rows, so reading runs in parallel and writing starts early."""
    group = first
    while group < len(starts) and starts[group] < span.stop:
        base = int(starts[group])
        end = int(starts[group + 1]) if group + 1 < len(starts) else span.stop
        for low in range(max(span.start, base), min(span.stop, end), ROW_GROUP_ROWS):
            yield group, low - base, min(low + ROW_GROUP_ROWS, span.stop, end) - base
        group += 1


def _page_chunk(
    footer: Footer, group: int, low: int, high: int, predicate: _Predicate, schema: pa.Schema
) -> list[pa.RecordBatch]:
    """The matching rows of one chunk, decoding only the pages that hold it; on any anomaly
    of the pages (an offset index, a header or a decoded length that does not add up), the
    rows decoded by pyarrow from the row group's start instead."""
    try:
        rows = read_rows(footer, group, low, high)
    except (SpliceError, pa.ArrowException, OSError) as error:
        logger.warning(f"{error}; reading rows {low}..{high} of row group {group} with pyarrow")
        try:
            rows = decode_rows(footer.path, group, low, high)
        except (SpliceError, pa.ArrowException, OSError) as again:
            raise StoreError(
                f"{footer.path}: rows {low}..{high} of row group {group} cannot be read, page "
                f"by page ({error}) nor by pyarrow ({again}): the mirror file is damaged; "
                "sync the mirror again"
            ) from again
    return predicate.keep(rows.cast(schema, safe=False)).to_batches()


def _decode(
    parquet: pq.ParquetFile,
    starts: np.ndarray,
    first: int,
    span: Span,
    predicate: _Predicate,
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """The matching rows of `span`, decoded by pyarrow from the start of its first row group
    (pages cannot be skipped here) up to the span's end."""
    last = int(np.searchsorted(starts, span.stop - 1, side="right")) - 1
    position = int(starts[first])
    batches = parquet.iter_batches(
        batch_size=min(ROW_GROUP_ROWS, span.stop - position),  # no rows past a short span
        row_groups=range(first, last + 1),
        columns=schema.names,
        use_threads=False,  # the writer has the other core
    )
    for batch in batches:
        low, high = max(span.start, position), min(span.stop, position + batch.num_rows)
        if low < high:
            part = predicate.keep(batch.slice(low - position, high - low))
            if part.num_rows:
                yield part
        position += batch.num_rows
        if position >= span.stop:
            break


def _counted(items: Iterator[_Item], per_file: dict[str, int]) -> Iterator[_Item]:
    for file, item in items:
        per_file[file.name] += item.rows if isinstance(item, Copy) else item.num_rows
        yield file, item


@dataclass(frozen=True)
class _Raised:
    error: BaseException


_END = object()


def _prefetch(items: Iterator[T], depth: int) -> Generator[T]:
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
        finally:  # release what `items` holds (threads, connections) now, in this thread
            close = getattr(items, "close", None)
            if close is not None:
                close()

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


def _write(items: Iterator[_Item], sink: _HashingSink, schema: pa.Schema, spliced: bool) -> str:
    """Write the slice to `sink`; returns the codec of the `emb` we encoded.

    Without row groups to copy, pyarrow writes straight to `sink`. Otherwise the file is
    spliced as it streams: each run of batches between copied row groups is encoded by pyarrow
    into memory (a segment, at most SEGMENT_BYTES) and its row groups are copied into `sink`
    in place, between the mirror's.
    """
    if not spliced:
        writer = _Writer(sink, schema, page_index=True)
        with contextlib.ExitStack() as stack:
            stack.callback(writer.abandon)
            for _, batch in items:
                writer.add(batch)
            writer.close()
        return writer.codec or "none"
    splicer = Splicer(sink, _reference_footer(schema))
    mirror: dict[Path, Footer] = {}
    segment = _Segment(schema, codec=None)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: segment.writer.abandon())
        for file, item in items:
            if isinstance(item, Copy):
                segment = segment.drain(splicer)
                try:
                    if file.path not in mirror:
                        mirror[file.path] = read_footer(file.path)
                    splicer.add(mirror[file.path], item.row_group)
                except SpliceError as error:
                    raise _damaged(error) from error
            else:
                segment.writer.add(item)
                if segment.size >= SEGMENT_BYTES:
                    segment = segment.drain(splicer)
        segment = segment.drain(splicer)
    splicer.close()
    return segment.writer.codec if segment.writer.codec is not None else "none"


class _Segment:
    """Batches encoded by pyarrow into memory, until `drain` copies their row groups out."""

    def __init__(self, schema: pa.Schema, codec: str | None) -> None:
        self.schema = schema
        self.buffer = pa.BufferOutputStream()
        self.writer = _Writer(self.buffer, schema, page_index=True, codec=codec)

    @property
    def size(self) -> int:
        return int(self.buffer.tell())

    def drain(self, splicer: Splicer) -> _Segment:
        """Copy the row groups written so far into `splicer`; returns a fresh segment."""
        if self.writer.rows == 0 and not self.writer.pending:
            return self
        self.writer.close()
        data = self.buffer.getvalue()
        footer = parse_footer(memoryview(data), Path("<segment>"), data=data)
        for group in range(len(footer.row_groups)):
            splicer.add(footer, group)
        return _Segment(self.schema, self.writer.codec)


class _Writer:
    """pyarrow's writer in row groups of ~ROW_GROUP_ROWS, opened at the first batch (which
    decides `emb`'s codec unless given) or at close for a file without batches."""

    def __init__(
        self, sink: Any, schema: pa.Schema, *, page_index: bool, codec: str | None = None
    ) -> None:
        self.sink, self.schema, self.page_index = sink, schema, page_index
        self.writer: pq.ParquetWriter | None = None
        self.codec = codec
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue `batch`, writing a row group once ROW_GROUP_ROWS are queued."""
        self.pending.append(batch)
        if sum(b.num_rows for b in self.pending) >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the queued batches as one row group."""
        if not self.pending:
            return
        writer = self._open(self.pending[0])
        table = pa.Table.from_batches(self.pending)
        writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        self.pending = []

    def close(self) -> None:
        """Flush and finish the file."""
        self.flush()
        self._open(None).close()
        self.writer = None

    def abandon(self) -> None:
        """Close a writer left open by a failure, while its file is still open."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def _open(self, first: pa.RecordBatch | None) -> pq.ParquetWriter:
        if self.writer is None:
            if self.codec is None:
                self.codec = "none" if first is None else _emb_codec(first)
            self.writer = _parquet_writer(self.sink, self.schema, self.codec, self.page_index)
        return self.writer


def _emb_codec(batch: pa.RecordBatch) -> str:
    """'zstd' if a sample of `emb`'s bytes is EMB_MIN_GAIN or more bigger raw than ZSTD'd."""
    if EMB_COLUMN not in batch.schema.names:
        return "none"
    values = batch.column(EMB_COLUMN).flatten()
    width = values.type.byte_width
    sample = values.buffers()[1][values.offset * width :][:_PROBE_BYTES]
    compressed = pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(sample)
    grows = sample.size / max(compressed.size, 1) - 1
    return "zstd" if grows >= EMB_MIN_GAIN else "none"


def _parquet_writer(
    sink: Any, schema: pa.Schema, emb_codec: str, page_index: bool
) -> pq.ParquetWriter:
    compression = {name: "zstd" for name in schema.names if name != EMB_COLUMN}
    compression[EMB_LEAF] = emb_codec
    return pq.ParquetWriter(
        sink,
        schema,
        compression=compression,
        compression_level={c: ZSTD_LEVEL for c, codec in compression.items() if codec == "zstd"},
        use_dictionary=[name for name in schema.names if name in STRING_COLUMNS],
        write_statistics=[name for name in schema.names if name in METADATA_COLUMNS],
        write_page_index=page_index,
    )


def _copyable(scans: list[Scan], schema: pa.Schema) -> list[Scan]:
    """`scans`, reading instead of copying the row groups of files we cannot splice (their
    parquet schema is not what pyarrow writes for `schema`, or their layout is unusual)."""
    wanted = _reference_footer(schema).schema
    result = []
    for scan in scans:
        copies = [p for p in scan.pieces if isinstance(p, Copy)]
        if copies:
            try:
                footer = read_footer(scan.file.path)
                ok = footer.schema == wanted and all(footer.byte_range(c.row_group) for c in copies)
            except SpliceError:
                ok = False
            if not ok:
                scan = _as_spans(scan)
        result.append(scan)
    return result


def _reference_footer(schema: pa.Schema) -> Footer:
    """The footer our writer gives an empty file of `schema`: the template of spliced files
    (physical schema, the Arrow schema in its key-value metadata, the writer's name)."""
    writer = _Writer(pa.BufferOutputStream(), schema, page_index=False, codec="none")
    writer.close()
    data = writer.sink.getvalue()
    return parse_footer(memoryview(data), Path("<reference>"), data=data)


def _as_spans(scan: Scan) -> Scan:
    """`scan` with its copied row groups read and filtered instead."""
    starts = _row_group_starts(pq.read_metadata(scan.file.path))
    spans = {}
    for piece in scan.pieces:
        if isinstance(piece, Copy):
            start = int(starts[piece.row_group])
            spans[piece.row_group] = Span(start, start + piece.rows, piece.rows)
        else:
            first = int(np.searchsorted(starts, piece.start, side="right")) - 1
            spans[first] = piece  # merged spans keep their first row group's place
    return _scan(scan.file, spans, exact=False)


@contextlib.contextmanager
def _jemalloc() -> Iterator[None]:
    """Allocate with jemalloc while extracting, if pyarrow has it. mimalloc, pyarrow's default
    here, hands freed pages back to the OS at once, and a fresh process (Dagster runs each step
    in one) faults them in again: ~2x the system time of a family-sized slice."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _damaged(error: SpliceError) -> StoreError:
    return StoreError(f"{error}: the mirror file is damaged; sync the mirror again")


def _temp_path(out: Path) -> Path:
    fd, name = tempfile.mkstemp(
        dir=out.parent, prefix=f"{TEMP_PREFIX}{out.name}.", suffix=TEMP_SUFFIX
    )
    try:
        make_public(fd)  # reopened by name below: the mode stays, not mkstemp's 0600
    finally:
        os.close(fd)
    return Path(name)


#: errno values of `copy_file_range` meaning "not here" (another file system, an old kernel,
#: a file system without it): the bytes are then copied through userspace.
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
)


def _kernel_copy(source: Any, target: Any, start: int, length: int) -> int:
    """Bytes [start, start + length) of `source` appended to `target` by the kernel
    (`os.copy_file_range`, Linux only: absent on macOS and Windows); returns how many it
    copied, 0 where it is missing or refuses this pair of files. Other errors (disk full, I/O)
    are raised."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is None:
        return 0
    copied = 0
    try:
        while copied < length:
            step = copy_file_range(
                source.fileno(), target.fileno(), length - copied, start + copied
            )
            if step == 0:
                break
            copied += step
    except OSError as error:
        if error.errno not in _NO_KERNEL_COPY:
            raise
    return copied


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

    def copy_range(self, path: Path, start: int, length: int) -> None:
        """Append bytes [start, start + length) of `path` without passing them through Python:
        hashed from a memory map of the page cache, copied by the kernel."""
        with open(path, "rb") as source:
            skip = start % mmap.ALLOCATIONGRANULARITY
            with (
                mmap.mmap(
                    source.fileno(), skip + length, offset=start - skip, access=mmap.ACCESS_READ
                ) as mapped,
                memoryview(mapped) as view,
                view[skip:] as part,
            ):
                self.digest.update(part)
            self.handle.flush()
            copied = _kernel_copy(source, self.handle, start, length)
            source.seek(start + copied)
            while copied < length:
                block = source.read(min(8 << 20, length - copied))
                if not block:
                    raise StoreError(f"{path}: ends inside a row group being copied")
                self.handle.write(block)
                copied += len(block)
        self.size += length

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True  # the caller fsyncs and closes the real file


__all__ = [
    "Copy",
    "Scan",
    "SliceResult",
    "Span",
    "Spans",
    "affected_slices",
    "close_matches",
    "expected_count",
    "extract_slice",
    "locate",
    "plan_scans",
    "refuse_empty",
]

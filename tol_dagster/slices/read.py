"""Reading a slice's rows out of the mirror, in mirror order, filtered by the key's predicate.

How, and why (bench/slices.py measures it):
- A range of rows is read row group by row group through the offset index
  (`parquet.pages.read_rows`): only the pages holding the range's rows are decoded, where
  pyarrow and DuckDB would decode (or decompress and skip) everything before them; a 50k-row
  row group's `emb` is ~75 MB. That is what makes a small slice cheap. On any anomaly of the
  pages, the rows are decoded by pyarrow from their row group's start instead.
- Files without an offset index fall back: a dense range (matches at least `DENSE_SHARE` of
  the rows to decode) is decoded by pyarrow from its row group's start, a sparse one goes
  through DuckDB restricted by `file_row_number` (it skips the `emb` of non-matching rows),
  its `list<float>` cast back. pyarrow reads `fixed_size_list<halffloat>` ~2x cheaper per row
  than DuckDB decodes it into `list<float>`.
- A range `splices` planned to splice page by page (a `Splice`) gets only its columns that
  are not copied decoded, and the rows at the ends of those that are (`_spliced`): the writer
  encodes them and copies the pages between as bytes. On any anomaly, its rows are read as
  above instead.
- Every path filters with the key's own predicate (`arrow_mask`, or `to_sql_filter` in
  DuckDB). PAGE_WORKERS chunks of pages are decoded at once, and `prefetched` runs the whole
  reader in a thread ahead of the writer: pyarrow releases the GIL.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.errors import StoreError
from tol_dagster.parquet.footer import Footer, SpliceError, read_footer
from tol_dagster.parquet.page_splice import Encoded, RangePlan, encode_pages
from tol_dagster.parquet.pages import decode_rows, read_rows
from tol_dagster.schema import quote_ident
from tol_dagster.slices.keys import SliceKey, arrow_mask, filter_columns, to_sql_filter
from tol_dagster.slices.locate import Copy, Scan, Span, Splice, row_groups
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.thread_pools import prefetched, shared_pool

logger = logging.getLogger("tol_dagster.slices.read")

#: Rows per batch read (~25 MB of float16 `emb` at 768 dims); the writer's row groups hold as
#: many, so read batches fill them without splitting.
BATCH_ROWS = 16_384
#: Read a range with pyarrow when its matches are at least this share of the rows it decodes.
DENSE_SHARE = 0.4
#: Read partial row groups page by page through the offset index (tests turn it off).
PAGE_READS = True
#: Chunks of pages read at once (pyarrow releases the GIL while it decodes).
PAGE_WORKERS = 2
#: Slices read ahead at once in a process (`prefetched`); more wait for one to end.
READERS = 8
#: A chunk's matches in more runs than this are read with the rows between them (`_matching_rows`).
SPARSE_RUNS = 8

T = TypeVar("T")
_Rows = TypeVar("_Rows", pa.Table, pa.RecordBatch)


@dataclass(frozen=True)
class SplicedRange:
    """A range of a row group to splice page by page (`parquet.page_splice`): the pages to
    copy (`plan`), the columns not copied decoded (`rest`, Arrow types), and each copied
    column's rows at both ends of the range encoded as pages (`ends`)."""

    plan: RangePlan
    rest: pa.Table
    ends: dict[int, tuple[Encoded | None, Encoded | None]]

    @property
    def rows(self) -> int:
        return self.plan.rows


#: What the reader hands the writer, of a mirror file: rows to write, a row group to copy, or
#: a range to splice page by page.
Item = tuple[MirrorFile, pa.RecordBatch | Copy | SplicedRange]
#: A piece of work for `read_slice_rows`: a row group to copy, a chunk of pages to read or a
#: range to splice (run in the pool), or batches to read in order.
_Job = (
    Copy
    | functools.partial[list[pa.RecordBatch]]
    | functools.partial[list[pa.RecordBatch | SplicedRange]]
    | Iterator[pa.RecordBatch]
)


def read_slice_rows(key: SliceKey, scans: Sequence[Scan], schema: pa.Schema) -> Iterator[Item]:
    """The rows satisfying `key` in mirror order: row groups to copy, and batches of the
    ranges, read page by page where the file has an offset index (PAGE_WORKERS chunks at a
    time), else by pyarrow when dense and DuckDB when sparse (see the module's docstring)."""
    window: deque[
        tuple[
            MirrorFile, Future[list[pa.RecordBatch]] | Future[list[pa.RecordBatch | SplicedRange]]
        ]
    ] = deque()

    def ready(limit: int) -> Iterator[Item]:
        """The results of the oldest chunks, in order, until at most `limit` are pending."""
        while len(window) > limit:
            file, chunk = window.popleft()
            for batch in chunk.result():
                yield file, batch

    pool = shared_pool("slice-pages", PAGE_WORKERS)
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
    finally:  # no read of this slice goes on once it is closed
        for _, chunk in window:
            chunk.cancel()
        futures.wait([chunk for _, chunk in window])


def _jobs(
    key: SliceKey, scans: Sequence[Scan], schema: pa.Schema
) -> Iterator[tuple[MirrorFile, _Job]]:
    """The work of each piece of `scans`, in order: by pages, by pyarrow or by DuckDB."""
    predicate = Predicate(key)
    with contextlib.ExitStack() as stack:
        con: duckdb.DuckDBPyConnection | None = None  # opened if a span needs it (~0.2 ms)
        for scan in scans:
            starts = row_groups(scan.file.path)[0]
            footer = page_indexed(scan)
            parquet: pq.ParquetFile | None = None  # opened once, if a span needs it
            for span in scan.pieces:
                if isinstance(span, Copy):
                    yield scan.file, span
                    continue
                if isinstance(span, Splice):
                    assert footer is not None  # planned only where the file is page-indexed
                    yield scan.file, functools.partial(_spliced, footer, span, predicate, schema)
                    continue
                first = int(np.searchsorted(starts, span.start, side="right")) - 1
                if footer is not None:
                    for group, low, high in _chunks(starts, first, span):
                        read = functools.partial(
                            _page_chunk, footer, group, low, high, predicate, schema
                        )
                        yield scan.file, read
                elif span.rows >= DENSE_SHARE * (span.stop - starts[first]):
                    if parquet is None:
                        parquet = pq.ParquetFile(scan.file.path)
                    yield scan.file, _pyarrow_rows(parquet, starts, first, span, predicate, schema)
                else:
                    con = con or stack.enter_context(duck.cursor())
                    yield scan.file, _duckdb_rows(con, key, scan.file, span, schema)


class Predicate:
    """The key's filter applied to the key's columns only: rows are taken (copied) only when
    some are dropped, so a batch wholly inside the taxon passes untouched."""

    def __init__(self, key: SliceKey) -> None:
        self.key = key
        self.columns = filter_columns(key)

    def keep(self, rows: _Rows) -> _Rows:
        mask = arrow_mask(self.key, rows)
        return rows if pc.all(mask).as_py() else rows.filter(mask)


def page_indexed(scan: Scan) -> Footer | None:
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
    and every BATCH_ROWS rows, so reading runs in parallel and writing starts early."""
    for group, low, high in group_ranges(starts, first, span):
        for cut in range(low, high, BATCH_ROWS):
            yield group, cut, min(cut + BATCH_ROWS, high)


def group_ranges(starts: np.ndarray, first: int, span: Span) -> Iterator[tuple[int, int, int]]:
    """(row group, start, stop) relative to the row group: `span` cut at row-group boundaries."""
    group = first
    while group < len(starts) and starts[group] < span.stop:
        base = int(starts[group])
        end = int(starts[group + 1]) if group + 1 < len(starts) else span.stop
        yield group, max(span.start, base) - base, min(span.stop, end) - base
        group += 1


def _spliced(
    footer: Footer, piece: Splice, predicate: Predicate, schema: pa.Schema
) -> list[pa.RecordBatch | SplicedRange]:
    """What the writer needs to splice `piece`: the columns not copied decoded, the rows at the
    ends of the copied ones encoded as pages; on any anomaly, its rows decoded instead."""
    plan = piece.plan
    try:
        names = plan.names
        rest = read_rows(
            footer, plan.row_group, plan.start, plan.stop,
            columns=[name for column, name in enumerate(names) if column not in plan.runs],
        )  # fmt: skip
        rest = rest.cast(pa.schema([schema.field(name) for name in rest.column_names]), safe=False)
        ends = {
            column: (
                _end_pages(plan, column, names[column], plan.start, run.first_row, schema),
                _end_pages(plan, column, names[column], run.end_row, plan.stop, schema),
            )
            for column, run in plan.runs.items()
        }
    except (SpliceError, pa.ArrowException, OSError) as error:
        logger.warning(f"{error}; decoding rows {plan.start}..{plan.stop} instead of splicing")
        return list(_page_chunk(footer, plan.row_group, plan.start, plan.stop, predicate, schema))
    return [SplicedRange(plan, rest, ends)]


def _end_pages(
    plan: RangePlan, column: int, name: str, start: int, stop: int, schema: pa.Schema
) -> Encoded | None:
    """Rows [start, stop) of a copied column, decoded from their pages and encoded again."""
    if start == stop:
        return None
    rows = read_rows(plan.footer, plan.row_group, start, stop, columns=[name])
    typed = rows.cast(pa.schema([schema.field(name)]), safe=False).column(0)
    return encode_pages(typed, plan, column)


def _page_chunk(
    footer: Footer, group: int, low: int, high: int, predicate: Predicate, schema: pa.Schema
) -> list[pa.RecordBatch]:
    """The matching rows of one chunk, decoding only the pages that hold it; on any anomaly
    of the pages (an offset index, a header or a decoded length that does not add up), the
    rows decoded by pyarrow from the row group's start instead."""
    try:
        return _matching_rows(footer, group, low, high, predicate, schema)
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


def _matching_rows(
    footer: Footer, group: int, low: int, high: int, predicate: Predicate, schema: pa.Schema
) -> list[pa.RecordBatch]:
    """The matching rows of rows [low, high) of `group`, page by page: the key's columns first,
    then, where the matches are a few runs covering less than DENSE_SHARE of the rows, only
    those runs (the taxon index gives one range per row group, and a taxon under several
    sources spans other taxa's rows: their `emb` pages are never decoded); else every row."""
    mask = arrow_mask(predicate.key, read_rows(footer, group, low, high, columns=predicate.columns))
    flags = mask.to_numpy(zero_copy_only=False)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    if not runs:
        return []
    if runs == [(0, high - low)]:
        rows = read_rows(footer, group, low, high)
    elif len(runs) > SPARSE_RUNS or flags.sum() >= DENSE_SHARE * (high - low):
        rows = read_rows(footer, group, low, high).filter(mask)
    else:
        parts = [read_rows(footer, group, low + a, low + b) for a, b in runs]
        rows = pa.concat_tables(parts).combine_chunks()
    return rows.cast(schema, safe=False).to_batches()


def _pyarrow_rows(
    parquet: pq.ParquetFile,
    starts: np.ndarray,
    first: int,
    span: Span,
    predicate: Predicate,
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """The matching rows of `span`, decoded by pyarrow from the start of its first row group
    (pages cannot be skipped here) up to the span's end."""
    last = int(np.searchsorted(starts, span.stop - 1, side="right")) - 1
    position = int(starts[first])
    batches = parquet.iter_batches(
        batch_size=min(BATCH_ROWS, span.stop - position),  # no rows past a short span
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


def _duckdb_rows(
    con: duckdb.DuckDBPyConnection, key: SliceKey, file: MirrorFile, span: Span, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The matching rows of `span`, filtered by DuckDB, which skips the `emb` of rows that
    do not match; its floats are the mirror's halves widened, so narrowing them is exact."""
    where, params = to_sql_filter(key)
    columns = ", ".join(quote_ident(name) for name in schema.names)
    query = (
        f"SELECT {columns} FROM read_parquet(?) WHERE file_row_number >= ? "
        f"AND file_row_number < ? AND {where}"
    )
    relation = con.sql(query, params=[str(file.path), span.start, span.stop, *params])
    return (b.cast(schema, safe=False) for b in relation.to_arrow_reader(BATCH_ROWS) if b.num_rows)


def read_ahead(items: Iterator[T], depth: int) -> Generator[T]:
    """`items` produced by the slice readers' threads up to `depth` ahead (`prefetched`):
    reading overlaps writing."""
    return prefetched(items, depth, shared_pool("slice-reader", READERS))

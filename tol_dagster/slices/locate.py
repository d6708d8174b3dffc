"""Where a slice's rows are: which row groups of which mirror files to copy whole, and which
file-relative row ranges to read and filter (`plan_scans`).

The taxon index names the row groups of a taxon, the file-relative row span in each and how
many of its rows match. Spans are merged into ranges. The key's own filter decides which rows
belong: the index is only a locator. Without an index, DuckDB finds the spans from the filter
columns alone (it skips `emb`). A row group whose every row satisfies the key is copied as
bytes: no decoding, no encoding. That is what makes a large slice cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.taxon_index import lookup
from tol_dagster.errors import StoreError
from tol_dagster.parquet.file_versions import per_file_version
from tol_dagster.parquet.page_splice import RangePlan
from tol_dagster.slices.keys import SliceKey, split_binomial, to_sql_filter
from tol_dagster.store.mirror_files import MirrorFile


class Span(NamedTuple):
    """File-relative rows [start, stop) holding up to `rows` matches."""

    start: int
    stop: int
    rows: int


class Copy(NamedTuple):
    """Row group `row_group`, all `rows` of which satisfy the key: copied as bytes."""

    row_group: int
    rows: int


class Splice(NamedTuple):
    """A range of row group `row_group`, every row of which satisfies the key: its pages that
    lie wholly inside it copied as bytes, the rest decoded (`plan`, see
    `parquet.page_splice`)."""

    row_group: int
    plan: RangePlan

    @property
    def rows(self) -> int:
        return self.plan.rows


#: file name -> row group -> the span of that row group that may hold matches.
Spans = dict[str, dict[int, Span]]


@dataclass(frozen=True)
class Scan:
    """What to read of one mirror file, in order: row groups to copy whole, and merged
    file-relative row ranges to filter, and ranges of row groups to splice page by page
    (`splices.plan_page_splices`); `row_groups` are all the row groups they touch."""

    file: MirrorFile
    pieces: tuple[Span | Copy | Splice, ...]
    row_groups: tuple[int, ...]


def plan_scans(key: SliceKey, files: Sequence[MirrorFile], index: pa.Table | None) -> list[Scan]:
    """What to read for `key`, in mirror order: from the index, else from a filter-column scan.

    A row group is copied whole when its span covers it and counts all its rows as matches,
    which is certain only where the spans' counts are exact for every condition.
    """
    spans = None if index is None else locate(key, index)
    exact = spans is None or all(
        locatable(rank, value) and index_counts_exactly(rank, value)
        for rank, value in key.conditions
    )
    if spans is None:
        spans = _spans_by_scan(key, files)
    refuse_unknown(spans, {f.name for f in files})
    return [scan_file(f, spans[f.name], exact) for f in files if f.name in spans]


def files_to_read(
    key: SliceKey, files: Sequence[MirrorFile], index: pa.Table | None
) -> list[MirrorFile]:
    """The files of `files` that may hold rows of `key`, in order: those the index locates it
    in, every file when it cannot (no index, or no locatable condition)."""
    spans = None if index is None else locate(key, index)
    if spans is None:
        return list(files)
    refuse_unknown(spans, {f.name for f in files})
    return [f for f in files if f.name in spans]


def index_entries(key: SliceKey, index: pa.Table) -> pa.Table:
    """The index's entries of `key`'s conditions: all that locating its rows reads (small,
    where the whole index of a full config is not)."""
    wanted = [
        pc.and_(pc.equal(index["rank"], rank), pc.is_in(index["value"], pa.array(values)))
        for rank, value in key.conditions
        for values in [indexed_as(rank, value)]
    ]
    return index.filter(functools.reduce(pc.or_, wanted))


def refuse_unknown(names: Iterable[str], known: Container[str]) -> None:
    """StoreError naming the first of `names` (files the taxon index names) not `known`."""
    unknown = sorted(n for n in set(names) if n not in known)
    if unknown:
        raise StoreError(
            f"the taxon index names {unknown[0]}, which is not in the mirror: the index is "
            "older than the mirror; rebuild it (materialize the config's taxon_index)"
        )


def locate(key: SliceKey, index: pa.Table) -> Spans | None:
    """The row spans, by file and row group, that hold every row satisfying `key`.

    A row satisfying all conditions lies in every condition's spans, so a path key reads their
    intersection. None when no condition can be located (a one-word `species` value alone:
    rows without a genus are not indexed under `species`).
    """
    located = [
        _spans(index, rank, value) for rank, value in key.conditions if locatable(rank, value)
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


def locatable(rank: str, value: str) -> bool:
    """The index holds every row of this condition (one-word `species` values it cannot)."""
    return rank != "species" or split_binomial(value) is not None


def index_counts_exactly(rank: str, value: str) -> bool:
    """The index's rows for (rank, value) are exactly the rows the key's filter keeps.

    For `species` the index's value is the species column when it holds a space, else genus +
    epithet: the same as the key's filter unless the epithet itself holds a space.
    """
    if rank != "species":
        return True
    parts = split_binomial(value)
    return parts is not None and " " not in parts[1]


def scan_file(file: MirrorFile, spans: dict[int, Span], exact: bool) -> Scan:
    """The pieces of one file: whole row groups to copy (if `exact`), touching spans merged."""
    starts, sizes = row_groups(file.path)
    pieces: list[Span | Copy | Splice] = []
    for group in sorted(spans):
        span = spans[group]
        size = int(sizes[group])
        last = pieces[-1] if pieces else None
        if exact and span == (starts[group], starts[group] + size, size):
            pieces.append(Copy(group, size))
        elif isinstance(last, Span) and span.start <= last.stop:
            pieces[-1] = Span(last.start, max(span.stop, last.stop), last.rows + span.rows)
        else:
            pieces.append(span)
    return Scan(file, tuple(pieces), tuple(sorted(spans)))


def row_group_starts(metadata: pq.FileMetaData) -> np.ndarray:
    """First file-relative row of each row group."""
    return _starts(_sizes(metadata))


@per_file_version(maxsize=1024)
def row_groups(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(first row, rows) of each row group of the parquet file at `path`, read once per file
    version: a rank pass asks for every value, and pyarrow parses the whole footer each time.
    Read-only arrays, shared."""
    sizes = _sizes(pq.read_metadata(path))
    starts = _starts(sizes)
    for array in (starts, sizes):
        array.setflags(write=False)
    return starts, sizes


def _sizes(metadata: pq.FileMetaData) -> np.ndarray:
    return np.array(
        [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)], dtype=np.int64
    )


def _starts(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def indexed_as(rank: str, value: str) -> list[str]:
    """The values the index may hold rows with `rank` = `value` under."""
    values = [value]
    parts = split_binomial(value) if rank == "species" else None
    if parts is not None and " " in parts[1]:
        values.append(parts[1])  # such rows are indexed under the species column as is
    return values


def entry_spans(entries: pa.Table) -> Spans:
    """The spans of taxon index `entries` (a value's own: a rank pass has them already cut)."""
    spans: Spans = {}
    columns = (
        entries[c].to_pylist() for c in ("file", "row_group", "row_start", "row_end", "rows")
    )
    for file, group, start, stop, rows in zip(*columns, strict=True):
        _widen(spans, file, group, Span(start, stop, rows))
    return spans


def _spans(index: pa.Table, rank: str, value: str) -> Spans:
    """The spans of the index entries that may hold rows with `rank` = `value`."""
    spans: Spans = {}
    for v in indexed_as(rank, value):
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
                starts = row_groups(file.path)[0]
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

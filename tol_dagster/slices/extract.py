"""Per-taxon slices: locate the rows with the taxon index, filter exactly, stream them to a file
with the mirror's exact schema and order, check it, publish it atomically (`extract_slice`).

The steps, each in its own module (bench/slices.py measures them against the dataset card's
DuckDB COPY):
- `locate`: which row groups to copy whole as bytes (what makes a large slice cheap) and which
  row ranges to read; `counts`: how many rows the key matches.
- `splices.plan_page_splices`: in a row group the slice covers only partly, the pages wholly
  inside its rows are copied as bytes too, only the pages at the ends decoded and encoded
  (`parquet.page_splice`).
- `read`: the ranges read page by page through the offset index (what makes a small slice
  cheap), filtered with the key's own predicate, in a thread ahead of the writer.
- `write`: rows encoded by pyarrow, copied row groups spliced in between them; `sink`: the
  sha256 computed on the bytes as they are written.
Reading and writing overlap (pyarrow releases the GIL). Batches stream, so memory is bounded
(under 1 GB measured, a whole kingdom included) whatever the slice's size. The file is written
under a temp name, and `verify` runs the blocking checks on it before it is fsynced and renamed
into place: a reader sees the old slice or the new one, never half of one, and a failing slice
never replaces a good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster import progress
from tol_dagster.errors import ValidationFailed
from tol_dagster.parquet.footer import read_footer
from tol_dagster.parquet.splice import Splicer
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.locate import Copy, Splice, plan_scans
from tol_dagster.slices.read import Item, read_ahead, read_slice_rows
from tol_dagster.slices.sink import HashingSink
from tol_dagster.slices.splices import plan_page_splices
from tol_dagster.slices.write import copyable_scans, reference_footer, write_slice
from tol_dagster.store.durable import atomic_path, fsync_dir
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import CheckResult

#: Batches the reader thread may run ahead of the writer.
READ_AHEAD = 2

#: The blocking checks of a finished slice file, run before it is published.
Verify = Callable[[Path], Sequence[CheckResult]]


@dataclass(frozen=True)
class SliceResult:
    """What `extract_slice` published, and what it cost. `emb_compression` is the codec of the
    rows it wrote; copied row groups and pages keep the mirror's. `row_groups_spliced` counts
    the partial row groups whose pages inside the slice were copied as bytes."""

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
    row_groups_spliced: int = 0
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
    sync_dir: bool = True,
    publish: Callable[[Path, Path], None] | None = None,
) -> SliceResult:
    """Write the rows of `files` (in mirror order) that satisfy `key` to `out`, atomically.

    `index` None finds the rows without it (correct, slower). `verify` gets the finished temp
    file; if any of its checks fails, `ValidationFailed` is raised and `out` is left as it was.
    A taxon with no rows gives a 0-row file with the full schema and a warning. `sync_dir`
    False: the caller makes the rename durable; `publish` (with `sync_dir` False) takes the
    finished temp file over (checked, if `verify` is given; a rank pass checks its slices in
    groups, `check_batch`) to fsync and rename it later (`store.durable.atomic_path`).
    """
    started = time.perf_counter()
    out = Path(out)
    progress.start("slice", what=key.name)
    # jemalloc for the checks too: they decode the slice's `emb` back.
    with atomic_path(out, sync_dir=sync_dir, publish=publish) as temp, _jemalloc():
        segment = _write_segment(key, files, index, temp, schema)
        checks = _verified(key, temp, out, verify)
    return _result(key, out, [segment], started, checks, (segment.sha256, segment.size))


def checked(key: SliceKey, temp: Path, out: Path, verify: Verify) -> tuple[CheckResult, ...]:
    """`verify`'s checks of the finished `temp` of slice `key` built outside `extract_slice`'s
    checks (a rank pass checks its slices in groups); ValidationFailed if any fails."""
    with _jemalloc():
        return _verified(key, temp, out, verify)


def _verified(
    key: SliceKey, temp: Path, out: Path, verify: Verify | None
) -> tuple[CheckResult, ...]:
    """The blocking checks of the finished `temp`; ValidationFailed if any fails (`out` is
    then left as it was)."""
    progress.start("slice checks", what=key.name)
    checks = tuple(verify(temp)) if verify is not None else ()
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ValidationFailed(
            f"slice {key.name}: not published, {out} is unchanged:\n"
            + "\n".join(c.message for c in failed)
        )
    return checks


def _result(
    key: SliceKey,
    out: Path,
    segments: Sequence[Segment],
    started: float,
    checks: tuple[CheckResult, ...],
    written: tuple[str, int],
) -> SliceResult:
    """What the slice published at `out` (`written`: its sha256 and size) holds and cost, from
    the segments it was made of; a 0-row slice says so (a warning)."""
    per_file = [pair for segment in segments for pair in segment.rows_by_file]
    codecs = [s.emb_compression for s in segments if s.emb_compression != "none"]
    rows = sum(count for _, count in per_file)
    warnings = () if rows else (f"slice {key.name}: no rows in the mirror match; wrote 0 rows",)
    for warning in warnings:
        progress.note(warning)
    return SliceResult(
        key=key.name,
        path=out,
        rows=rows,
        bytes=written[1],
        sha256=written[0],
        source_files=tuple(name for name, count in per_file if count),
        row_groups_read=sum(s.row_groups_read for s in segments),
        row_groups_copied=sum(s.row_groups_copied for s in segments),
        row_groups_spliced=sum(s.row_groups_spliced for s in segments),
        seconds=time.perf_counter() - started,
        emb_compression=codecs[0] if codecs else "none",
        warnings=warnings,
        checks=checks,
    )


@dataclass(frozen=True)
class Segment:
    """The rows of a slice in some of the mirror's files (`extract_segment`), not checked nor
    published: what one step of a slice run writes and passes on (small: a path and counts)."""

    path: Path
    rows_by_file: tuple[tuple[str, int], ...]
    row_groups_read: int
    row_groups_copied: int
    row_groups_spliced: int
    emb_compression: str
    sha256: str
    size: int


def extract_segment(
    key: SliceKey,
    files: Sequence[MirrorFile],
    index: pa.Table | None,
    out: Path,
    *,
    schema: pa.Schema,
) -> Segment:
    """Write the rows of `files` that satisfy `key` to `out` (atomically), for
    `assemble_slice`. Any cut of the mirror's files into segments assembles to the same bytes:
    each file's rows are written on their own (`write_slice`). Rows written advance the task
    "slice", which the caller starts (once for all the segments it extracts)."""
    if index is not None:  # its entries of these files: the others are other segments'
        index = index.filter(
            pc.is_in(index["file"], pa.array([f.name for f in files], pa.string()))
        )
    with atomic_path(out, sync_dir=False) as temp, _jemalloc():
        segment = _write_segment(key, files, index, temp, schema)
    return dataclasses.replace(segment, path=out)


def assemble_slice(
    key: SliceKey,
    segments: Sequence[Segment],
    out: Path,
    *,
    schema: pa.Schema,
    verify: Verify | None = None,
    started: float | None = None,
) -> SliceResult:
    """Publish the slice made of `segments` (in mirror order) at `out`, atomically: their row
    groups copied as bytes into one file, which `verify` checks before the rename (as in
    `extract_slice`: a failing slice never replaces a good one)."""
    started = time.perf_counter() if started is None else started
    out.parent.mkdir(parents=True, exist_ok=True)
    only = segments[0] if len(segments) == 1 else None
    with _jemalloc():  # the checks decode the slice's `emb` back
        if only is not None and only.path.stat().st_dev == out.parent.stat().st_dev:
            # One segment is already the slice's bytes (splicing it again copies it as it is):
            # checked where it lies, then renamed into place, written once.
            checks = _verified(key, only.path, out, verify)
            os.replace(only.path, out)
            fsync_dir(out.parent)
            written = (only.sha256, only.size)
        else:
            written, checks = _spliced(key, segments, out, schema, verify)
    return _result(key, out, segments, started, checks, written)


def _spliced(
    key: SliceKey, segments: Sequence[Segment], out: Path, schema: pa.Schema, verify: Verify | None
) -> tuple[tuple[str, int], tuple[CheckResult, ...]]:
    """The segments' row groups copied into one file at `out`, checked, then renamed into
    place; its sha256 and size, and the checks."""
    with atomic_path(out) as temp:
        with open(temp, "wb") as handle:
            sink = HashingSink(handle)
            splicer = Splicer(sink, reference_footer(schema))
            for segment in segments:
                footer = read_footer(segment.path)
                for group in range(len(footer.row_groups)):
                    splicer.add(footer, group)
            splicer.close()
        checks = _verified(key, temp, out, verify)
    return (sink.digest.hexdigest(), sink.size), checks


def _write_segment(
    key: SliceKey,
    files: Sequence[MirrorFile],
    index: pa.Table | None,
    path: Path,
    schema: pa.Schema,
) -> Segment:
    """Write the rows of `files` that satisfy `key` to `path` (the one way every slice is
    written), reading ahead of the writer in a thread."""
    scans = plan_page_splices(key, copyable_scans(plan_scans(key, files, index), schema))
    per_file = {scan.file.name: 0 for scan in scans}
    reader = contextlib.closing(read_ahead(read_slice_rows(key, scans, schema), READ_AHEAD))
    with open(path, "wb") as handle, reader as items:
        sink = HashingSink(handle)
        codec = write_slice(_counted(items, per_file), sink, schema)
    return Segment(
        path=path,
        rows_by_file=tuple(per_file.items()),
        row_groups_read=sum(len(scan.row_groups) for scan in scans),
        row_groups_copied=sum(isinstance(p, Copy) for scan in scans for p in scan.pieces),
        row_groups_spliced=sum(isinstance(p, Splice) for scan in scans for p in scan.pieces),
        emb_compression=codec,
        sha256=sink.digest.hexdigest(),
        size=sink.size,
    )


def _counted(items: Iterator[Item], per_file: dict[str, int]) -> Iterator[Item]:
    """`items`, their rows counted by file on the way to the writer (and to `progress`)."""
    for file, item in items:
        rows = item.num_rows if isinstance(item, pa.RecordBatch) else item.rows
        per_file[file.name] += rows
        progress.advance("slice", rows=rows)
        yield file, item


@contextlib.contextmanager
def _jemalloc() -> Iterator[None]:
    """Allocate with jemalloc while extracting and checking, if pyarrow has it. mimalloc, pyarrow's default
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

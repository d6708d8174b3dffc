"""A parquet file written as keyed segments of row groups, so that writing its next version
copies the row groups of unchanged segments from the previous one as bytes and encodes only
the segments whose key is new.

Why: a derived table is rebuilt after every resync, and a resync changes few of the mirror's
files. Encoding a whole table again costs more than everything else an update does; a segment
per group of mirror files, keyed by what it was computed from, makes the update's writing
proportional to what changed. The file stays one ordinary parquet file: readers see row groups,
and the segments' keys and row counts sit in its key-value metadata (`SEGMENTS_KEY`).

A previous version is reused only when it declares the same `layout` (the caller names its
format and writer options there), its physical schema is the new one's, its row groups add up
to its declared segments, and the bytes copied of each segment hash to the sha256 it declares
(a flipped byte in a published table is not carried into the next one); anything else means a
full write.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import Footer, SpliceError, parse_file_footer, parse_footer
from tol_dagster.parquet.splice import Splicer

#: The key-value metadata entry that lists a file's segments: {"layout": ..., "segments":
#: [[key, rows, sha256 of its row groups' bytes], ...]}.
SEGMENTS_KEY = b"tol.segments"


@dataclass(frozen=True)
class Segment:
    """Rows of the table under a key that changes whenever they would: `rows` builds them,
    and is called only when no previous version holds the key."""

    key: str
    rows: Callable[[], pa.Table]


@dataclass(frozen=True)
class Written:
    """What `write_segmented` wrote: rows, and segments copied from the previous version or
    encoded."""

    rows: int
    copied: int
    encoded: int


def write_segmented(
    path: Path,
    schema: pa.Schema,
    segments: Sequence[Segment],
    *,
    layout: str,
    previous: Path | None = None,
    **options: Any,
) -> Written:
    """Write `segments` in order to `path` as one parquet file of `schema`, copying the row
    groups of segments that `previous` (a file this function wrote) holds under the same key
    and `layout`; `options` go to `pq.ParquetWriter` for the segments encoded."""
    keys = [s.key for s in segments]
    if len(set(keys)) != len(keys):
        raise ValueError("segment keys must be unique")
    old = _previous(previous, layout) if previous is not None else None
    try:
        return _write(path, schema, segments, layout, old, options)
    except SpliceError:
        if old is None:
            raise
        return _write(path, schema, segments, layout, None, options)


def declared_segments(path: Path) -> list[tuple[str, int, str]] | None:
    """(key, rows, sha256 of its row groups' bytes) of each segment of a file
    `write_segmented` wrote; None for any other file."""
    declared = _declared(path)
    return None if declared is None else declared[1]


@dataclass(frozen=True)
class _Previous:
    footer: Footer
    groups: dict[str, list[int]]  # segment key -> its row groups in the footer
    digests: dict[str, str]


def _declared(path: Path) -> tuple[str, list[tuple[str, int, str]]] | None:
    """(layout, segments) as the file at `path` declares them; None if it does not."""
    try:
        declared = json.loads((pq.read_metadata(path).metadata or {})[SEGMENTS_KEY])
        return str(declared["layout"]), [
            (str(k), int(n), str(d)) for k, n, d in declared["segments"]
        ]
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None


def _previous(path: Path, layout: str) -> _Previous | None:
    """The reusable segments of the file at `path`, or None if there are none to trust."""
    declared = _declared(path)
    if declared is None or declared[0] != layout:
        return None
    try:
        footer = parse_file_footer(path)  # this write's alone: its row groups move in place
    except (OSError, SpliceError):
        return None
    groups = _groups_of(footer, [(key, rows) for key, rows, _ in declared[1]])
    if groups is None:
        return None
    return _Previous(footer, groups, {key: digest for key, _, digest in declared[1]})


def _groups_of(footer: Footer, segments: list[tuple[str, int]]) -> dict[str, list[int]] | None:
    """Each segment's row groups, matched by row counts; None when they do not add up."""
    sizes = [int(group.get(field_ids.RG_NUM_ROWS) or 0) for group in footer.row_groups]
    groups: dict[str, list[int]] = {}
    position = 0
    for key, rows in segments:
        mine: list[int] = []
        while rows > 0 and position < len(sizes):
            rows -= sizes[position]
            mine.append(position)
            position += 1
        if rows != 0:
            return None
        groups[key] = mine
    return groups if position == len(sizes) else None


@dataclass
class _HashingSink:
    """The output file, hashing what is written since `start` (one segment's row groups)."""

    handle: Any
    digest: Any = field(default_factory=hashlib.sha256)

    def start(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def _write(
    path: Path,
    schema: pa.Schema,
    segments: Sequence[Segment],
    layout: str,
    old: _Previous | None,
    options: dict[str, Any],
) -> Written:
    reused = {s.key for s in segments if old is not None and s.key in old.groups}
    fresh = {s.key: s.rows().cast(schema) for s in segments if s.key not in reused}
    new = _encoded(schema, fresh, options)
    new_groups = _groups_of(new, [(key, table.num_rows) for key, table in fresh.items()])
    assert new_groups is not None  # pyarrow wrote exactly these rows
    sources: dict[str, tuple[Footer, list[int], str | None]] = {
        key: (new, groups, None) for key, groups in new_groups.items()
    }
    if old is not None:
        sources |= {key: (old.footer, old.groups[key], old.digests[key]) for key in reused}
    declared = []
    with open(path, "wb") as handle:
        sink = _HashingSink(handle)
        splicer = Splicer(sink, new)
        for segment in segments:
            footer, groups, expected = sources[segment.key]
            sink.start()
            for group in groups:
                splicer.add(footer, group, owned=True)
            digest = sink.digest.hexdigest()
            if expected is not None and digest != expected:
                raise SpliceError(f"{footer.path}: segment {segment.key} changed on disk")
            rows = sum(int(footer.row_groups[g].get(field_ids.RG_NUM_ROWS)) for g in groups)
            declared.append([segment.key, rows, digest])
        layout_json = json.dumps({"layout": layout, "segments": declared})
        total = splicer.close({SEGMENTS_KEY: layout_json.encode()})
    return Written(rows=total, copied=len(reused), encoded=len(fresh))


def _encoded(schema: pa.Schema, tables: dict[str, pa.Table], options: dict[str, Any]) -> Footer:
    """The segments to encode, each starting a row group of its own, in one file in memory
    whose footer (schema and writer options as the new file needs them) is the template."""
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, schema, **options) as writer:
        for table in tables.values():
            if table.num_rows:
                writer.write_table(table)
    data = buffer.getbuffer()
    return parse_footer(data, Path("<segments being written>"), data)

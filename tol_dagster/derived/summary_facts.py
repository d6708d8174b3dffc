"""What the summaries need of every file at each build, kept for the whole mirror in two small
files, so that an update reads the parts of the files it re-encodes and no others.

An update needs each file's groups at the seams (`seams.FileGroups`: a few numbers per rank),
its statistics (the `files` table) and its value counts (summed into the value tables). Read
from 666 parts, these cost more than everything else an update does (~0.25 s: opening each
part, reading its ends); kept here they are two reads. Rows are keyed by the file's sha256,
like the parts: a file not found here (new, or a cache lost or damaged) is read from its part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from tol_dagster.derived import seams
from tol_dagster.derived.rank_counts import PART_SCHEMA, Part, seam_facts
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

#: The files' facts and their value counts, under the config's state folder (bump the suffix
#: with the summary part's).
FACTS = "summary_facts.v2.arrow"
VALUES = "summary_values.v2.arrow"

_INTS = pa.list_(pa.int64())
_STRINGS = pa.list_(pa.string())
_FACTS_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string()),
        pa.field("groups", _INTS),
        pa.field("first_images", _INTS),
        pa.field("last_images", _INTS),
        pa.field("first", _STRINGS),
        pa.field("last", _STRINGS),
        pa.field("stats", pa.string()),
    ]
)
_VALUES_SCHEMA = pa.schema([pa.field("sha256", pa.string()), *PART_SCHEMA])


@dataclass(frozen=True)
class Facts:
    """One file's groups at the seams and statistics."""

    groups: seams.FileGroups
    stats: dict[str, Any]


def load(
    files: Sequence[MirrorFile],
    layout: Layout,
    config: str,
    read: Callable[[MirrorFile], Part],
    *,
    force: bool = False,
) -> tuple[list[Facts], pa.Table]:
    """Each file's facts, and the value counts of all `files` (part schema, `sha256` added),
    from the kept facts, or from `read` (a file's part) for files they lack (all when
    `force`); the kept facts are then rewritten for exactly `files`."""
    wanted = pa.array([f.sha256 for f in files], pa.string())
    kept, values = _FACTS_SCHEMA.empty_table(), _VALUES_SCHEMA.empty_table()
    if not force:
        kept = _read(layout, config, FACTS, _FACTS_SCHEMA, wanted)
        values = _read(layout, config, VALUES, _VALUES_SCHEMA, wanted)
    by_sha = {row["sha256"]: row for row in kept.to_pylist()}
    have_values = set(values["sha256"].unique().to_pylist())
    missing = list(
        {
            f.sha256: f for f in files if f.sha256 not in by_sha or f.sha256 not in have_values
        }.values()
    )
    added_values = []
    for file in missing:
        part = read(file)
        by_sha[file.sha256] = _row(file.sha256, seam_facts(part), part.stats)
        rows = part.table.slice(sum(part.level_rows))
        added_values.append(rows.add_column(0, "sha256", pa.repeat(file.sha256, rows.num_rows)))
    if missing:
        stale = pc.is_in(values["sha256"], pa.array([f.sha256 for f in missing], pa.string()))
        values = pa.concat_tables(
            [values.filter(pc.invert(stale)), *(v.cast(_VALUES_SCHEMA) for v in added_values)]
        )
    rows = [by_sha[f.sha256] for f in files]
    if missing or kept.num_rows != len(set(wanted.to_pylist())):
        _write(layout, config, FACTS, pa.Table.from_pylist(rows, schema=_FACTS_SCHEMA))
        _write(layout, config, VALUES, values)
    return [_facts(row) for row in rows], values


def _row(sha256: str, groups: seams.FileGroups, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha256": sha256,
        "groups": list(groups.groups),
        "first_images": list(groups.first_images),
        "last_images": list(groups.last_images),
        "first": list(groups.first),
        "last": list(groups.last),
        "stats": json.dumps(stats),
    }


def _facts(row: dict[str, Any]) -> Facts:
    return Facts(
        seams.FileGroups(
            groups=row["groups"],
            first_images=row["first_images"],
            last_images=row["last_images"],
            first=tuple(row["first"]),
            last=tuple(row["last"]),
        ),
        json.loads(row["stats"]),
    )


def _path(layout: Layout, config: str, name: str) -> Path:
    return layout.state_dir(config) / name


def _read(layout: Layout, config: str, name: str, schema: pa.Schema, wanted: pa.Array) -> pa.Table:
    """The kept rows of `wanted` files; none if the file is missing or unreadable (a cache:
    the parts rebuild it)."""
    try:
        table = feather.read_table(_path(layout, config, name), memory_map=False)
        if not table.schema.equals(schema):
            raise ValueError(f"{name}: another schema")
    except (OSError, ValueError, pa.ArrowException):
        return schema.empty_table()
    return table.filter(pc.is_in(table["sha256"], wanted))


def _write(layout: Layout, config: str, name: str, table: pa.Table) -> None:
    with atomic_path(_path(layout, config, name)) as tmp:
        feather.write_feather(table, tmp, compression="uncompressed")

"""What the summaries need of every file at each build, kept for the whole mirror in two small
files, so that an update reads the parts of the files it re-encodes and no others.

An update needs each file's groups at the seams (`seams.FileGroups`: a few numbers per rank),
its statistics (the `files` table) and its value counts (summed into the value tables). Read
from 666 parts, these cost more than everything else an update does (~0.25 s: opening each
part, reading its ends); kept here they are two reads. Rows are keyed by the file's sha256,
like the parts, and hold the crc32 of the part they were read from: a file not found here (new,
a cache lost or damaged) or found with another part (computed anew since: its file was
repaired) is read from its part. The facts carry their crc32 and the values' sha256, so a
flipped byte in either is a cache lost, not a count changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from tol_dagster.derived import seams
from tol_dagster.derived.rank_counts import PART_SCHEMA, Part, seam_facts
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import drop_older_versions, keep_table, kept_table
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

#: The files' facts and their value counts, under the config's state folder (bump the suffix
#: with the summary part's).
FACTS = "summary_facts.v4.arrow"
VALUES = "summary_values.v4.arrow"

_INTS = pa.list_(pa.int64())
_STRINGS = pa.list_(pa.string())
_FACTS_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string()),
        pa.field("part_crc32", pa.int64()),
        pa.field("groups", _INTS),
        pa.field("first_images", _INTS),
        pa.field("last_images", _INTS),
        pa.field("first", _STRINGS),
        pa.field("last", _STRINGS),
        pa.field("stats", pa.string()),
    ]
)
_VALUES_SCHEMA = pa.schema([pa.field("sha256", pa.string()), *PART_SCHEMA])
#: The facts' schema metadata key naming the sha256 of the values file written with them.
_VALUES_SHA256 = b"values_sha256"


@dataclass(frozen=True)
class Facts:
    """One file's groups at the seams and statistics."""

    groups: seams.FileGroups
    stats: dict[str, Any]


def load(
    files: Sequence[MirrorFile],
    crcs: Mapping[str, int | None],
    layout: Layout,
    config: str,
    read: Callable[[MirrorFile], Part],
    *,
    force: bool = False,
) -> tuple[list[Facts], pa.Table]:
    """Each file's facts, and the value counts of all `files` (part schema, `sha256` added),
    from the kept facts of the parts whose crc32 are `crcs` (`parts.part_crcs`), or from
    `read` (a file's part) for the others (all when `force`); the kept facts are then
    rewritten for exactly `files`."""
    wanted = {f.sha256: crcs[f.name] for f in files}
    kept, values = _read(layout, config) if not force else _nothing()
    kept_shas = set(kept["sha256"].to_pylist())
    good = {
        row["sha256"]
        for row in kept.select(["sha256", "part_crc32"]).to_pylist()
        if row["part_crc32"] is not None and wanted.get(row["sha256"]) == row["part_crc32"]
    }
    if kept_shas != good:  # files left the mirror, or their parts were computed anew
        keep = pa.array(sorted(good), pa.string())
        kept = kept.filter(pc.is_in(kept["sha256"], keep))
        values = values.filter(pc.is_in(values["sha256"], keep))
    by_sha = {row["sha256"]: row for row in kept.to_pylist()}
    missing = list({f.sha256: f for f in files if f.sha256 not in by_sha}.values())
    added = [values]
    for file in missing:
        part = read(file)
        by_sha[file.sha256] = _row(file.sha256, wanted[file.sha256], seam_facts(part), part.stats)
        rows = part.table.slice(sum(part.level_rows))
        rows = rows.add_column(0, "sha256", pa.repeat(file.sha256, rows.num_rows))
        added.append(rows.cast(_VALUES_SCHEMA))
    # One batch: kept as concatenated, a first build's values were one batch per file, and
    # every later read, filter and write walked them all (~70 ms of an update at 666 files).
    values = pa.concat_tables(added).combine_chunks()
    rows = [by_sha[f.sha256] for f in files]
    if missing or kept_shas != set(wanted):
        _write(layout, config, pa.Table.from_pylist(rows, schema=_FACTS_SCHEMA), values)
    return [_facts(row) for row in rows], values


def _nothing() -> tuple[pa.Table, pa.Table]:
    return _FACTS_SCHEMA.empty_table(), _VALUES_SCHEMA.empty_table()


def _row(
    sha256: str, crc: int | None, groups: seams.FileGroups, stats: dict[str, Any]
) -> dict[str, Any]:
    return {
        "sha256": sha256,
        "part_crc32": crc,
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


def _read(layout: Layout, config: str) -> tuple[pa.Table, pa.Table]:
    """The kept facts and value counts; none if either is missing, unreadable, or not the
    other's pair (the facts name their values file's sha256): a cache, the parts rebuild it."""
    try:
        data = _path(layout, config, VALUES).read_bytes()
        facts = kept_table(_path(layout, config, FACTS))
        if facts.schema.metadata.get(_VALUES_SHA256) != hashlib.sha256(data).hexdigest().encode():
            raise ValueError("the values are not the facts' pair")
        values = feather.read_table(pa.BufferReader(data))
        if not (facts.schema.equals(_FACTS_SCHEMA) and values.schema.equals(_VALUES_SCHEMA)):
            raise ValueError("another schema")
    except (OSError, ValueError, AttributeError, pa.ArrowException):
        return _nothing()
    return facts, values


def _write(layout: Layout, config: str, facts: pa.Table, values: pa.Table) -> None:
    """Keep the values, then the facts that name their sha256 (a crash between the two
    leaves a pair that `_read` refuses)."""
    with atomic_path(_path(layout, config, VALUES)) as tmp:
        feather.write_feather(values, tmp, compression="uncompressed")
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    facts = facts.replace_schema_metadata({_VALUES_SHA256: digest})
    keep_table(_path(layout, config, FACTS), facts)
    for name in (VALUES, FACTS):
        drop_older_versions(_path(layout, config, name))

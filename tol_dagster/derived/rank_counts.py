"""The `rank_counts` and `lineage` summaries: image counts per group at each rank, kingdom to
species, from each file's groups (its part) joined at the seams between files (`seams`).

Published in segments of consecutive files (`parts.file_groups`): a segment's rows are the
groups that start in its files, with their totals, so its key is its files' contents and the
few totals its groups collect from later files; an update re-encodes the segments whose key
changed and copies the others. Within a segment, rows go rank by rank, file by file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.derived import seams
from tol_dagster.derived.parts import content_key, file_groups
from tol_dagster.derived.sorted_runs import changes, concat_sorted, sum_runs
from tol_dagster.parquet.segmented import Segment
from tol_dagster.schema import RANKS
from tol_dagster.store.mirror_files import MirrorFile

LINEAGE = ("source_dataset", *RANKS)
STRING = pa.string()
IMAGES = pa.field("images", pa.int64())
#: The `lineage` summary: images per full lineage.
LINEAGE_SCHEMA = pa.schema([*(pa.field(n, STRING) for n in LINEAGE), IMAGES])
#: The `rank_counts` summary: images per group at each rank (NULL below the rank).
RANK_COUNTS_SCHEMA = pa.schema([pa.field("rank", STRING), *LINEAGE_SCHEMA])
#: A file's part: its groups at each rank (`part` = the rank), then its value counts (`part` =
#: the value table's name, see `summaries`).
PART_SCHEMA = pa.schema(
    [
        pa.field("part", STRING),
        *LINEAGE_SCHEMA.remove(len(LINEAGE)),
        pa.field("value", STRING),
        IMAGES,
    ]
)


@dataclass(frozen=True)
class Part:
    """A file's part with what its metadata says: its rows at each rank, kingdom to species,
    and the file's statistics."""

    table: pa.Table
    level_rows: list[int]
    stats: dict[str, Any]

    @classmethod
    def of(cls, table: pa.Table) -> Part:
        metadata = table.schema.metadata
        rows = [int(n) for n in json.loads(metadata[b"level_rows"])]
        return cls(table, rows, json.loads(metadata[b"file_stats"]))

    def level(self, level: int, skip: int = 0) -> pa.Table:
        """Its rows at `level` (an index into RANKS), without the first `skip`."""
        return self.table.slice(sum(self.level_rows[:level]) + skip, self.level_rows[level] - skip)


@dataclass(frozen=True)
class _Joined:
    """A file, how to read its part, and how its groups join its neighbours'."""

    file: MirrorFile
    read: Callable[[MirrorFile], Part]
    seams: seams.Joined


def segments(
    files: Sequence[MirrorFile],
    groups: Sequence[seams.FileGroups],
    read: Callable[[MirrorFile], Part],
    crcs: Mapping[str, int | None],
    layouts: dict[str, str],
) -> dict[str, list[Segment]]:
    """The `lineage` and `rank_counts` tables as segments of consecutive files: each file's
    groups, those it shares with the file before left to the file that owns them, totals on
    the groups it owns (`seams`). Files out of lineage order make one segment, sorted whole.
    Only the files of segments being encoded are `read`; segments are keyed by the `crcs`
    of the files' parts."""
    joined = seams.join(groups)
    if joined is None:
        key = content_key(files, crcs, layouts, "sorted whole")
        rank_counts = functools.cache(partial(_sorted_whole, [partial(read, f) for f in files]))
        return {
            "rank_counts": [Segment(key, rank_counts)],
            "lineage": [Segment(key, lambda: _lineage_of(rank_counts()))],
        }
    by_file = {f.name: _Joined(f, read, j) for f, j in zip(files, joined, strict=True)}
    segments: dict[str, list[Segment]] = {"rank_counts": [], "lineage": []}
    for group in file_groups(files):
        mine = [by_file[f.name] for f in group]
        merged = [(j.seams.merged, j.seams.total) for j in mine]
        key = content_key(group, crcs, layouts, merged)
        ranks = partial(_published_rows, mine, range(len(RANKS)))
        segments["rank_counts"].append(Segment(key, ranks))
        segments["lineage"].append(Segment(key, partial(_published_lineage, mine)))
    return segments


def seam_facts(part: Part) -> seams.FileGroups:
    """A part's groups at each rank as `seams.join` needs them (a few values per rank)."""
    starts = np.cumsum([0, *part.level_rows[:-1]]).tolist()
    spans = [(start, start + n) for start, n in zip(starts, part.level_rows, strict=True)]
    images = part.table["images"].to_numpy()
    first_last: list[Any] = [(), ()]
    if part.level_rows[-1]:
        lineages = part.table.select(LINEAGE)
        ends = [lineages.slice(spans[-1][0], 1), lineages.slice(spans[-1][1] - 1, 1)]
        first_last = [tuple(end.to_pylist()[0].values()) for end in ends]
    return seams.FileGroups(
        groups=part.level_rows,
        first_images=[int(images[a]) if a < b else 0 for a, b in spans],
        last_images=[int(images[b - 1]) if a < b else 0 for a, b in spans],
        first=first_last[0],
        last=first_last[1],
    )


def _published_rows(files: Sequence[_Joined], levels: Sequence[int]) -> pa.Table:
    """Some consecutive files' rows of `rank_counts` at `levels`: level by level, file by file,
    each file's groups without the first when an earlier file owns it, with the totals of
    those it owns."""
    parts = {file.file.name: file.read(file.file) for file in files}
    tables = []
    for level in levels:
        for file in files:
            rows = parts[file.file.name].level(level, skip=int(file.seams.merged[level]))
            total = file.seams.total[level]
            if total is not None and rows.num_rows:
                images = rows["images"].to_numpy().copy()
                images[-1] = total
                rows = rows.set_column(
                    rows.schema.get_field_index("images"), IMAGES, pa.array(images)
                )
            tables.append(rows)
    return _as_rank_counts(pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table())


def _published_lineage(files: Sequence[_Joined]) -> pa.Table:
    """Some consecutive files' rows of `lineage`: their groups at species level."""
    return _lineage_of(_published_rows(files, [len(RANKS) - 1]))


def _as_rank_counts(rows: pa.Table) -> pa.Table:
    """Part rows of ranks as `rank_counts` rows (the part names the rank)."""
    return rows.rename_columns(["rank", *rows.column_names[1:]]).select(RANK_COUNTS_SCHEMA.names)


def _lineage_of(rank_counts: pa.Table) -> pa.Table:
    """The `lineage` rows of `rank_counts` rows: those at species level, the full lineages."""
    species = rank_counts.filter(pc.equal(rank_counts["rank"], RANKS[-1]))
    return species.select(LINEAGE_SCHEMA.names)


def _sorted_whole(reads: Sequence[Callable[[], Part]]) -> pa.Table:
    """`rank_counts` from parts that are not in lineage order: their lineages sorted and
    summed, then counted at each rank."""
    lineages = [read().level(len(RANKS) - 1).select(LINEAGE_SCHEMA.names) for read in reads]
    lineage = sum_runs(concat_sorted(lineages, LINEAGE, LINEAGE_SCHEMA), LINEAGE, ["images"])
    return pa.concat_tables(by_rank(lineage.cast(LINEAGE_SCHEMA)))


def by_rank(lineage: pa.Table) -> list[pa.Table]:
    """Counts at each rank from sorted lineage rows (rank_counts rows, kingdom to species).

    At a rank, a group is a run of rows sharing the source and the ranks down to it, so one
    pass of neighbour comparisons serves every rank; at `species` the groups are the full
    lineages. NULL equals NULL in a run, so a hole above the rank stays its own bucket; the
    `rank` column tells a hole (NULL at or above `rank`) from truncation (NULL below it).
    """
    images = lineage["images"].to_numpy()
    changed = changes(lineage["source_dataset"])
    tables = []
    for depth, rank in enumerate(RANKS):
        changed |= changes(lineage[rank])
        starts = np.flatnonzero(changed)
        kept = LINEAGE[: depth + 2]
        rows = lineage.select(kept)
        if len(starts) < lineage.num_rows:  # at `species` only rows at file seams repeat, if any
            rows = rows.take(starts)
        columns = {
            "rank": pa.repeat(rank, len(starts)),
            **dict(zip(kept, rows.columns, strict=True)),
        }
        columns |= {c: pa.nulls(len(starts), STRING) for c in LINEAGE[depth + 2 :]}
        columns["images"] = np.add.reduceat(images, starts)
        tables.append(pa.table(columns, schema=RANK_COUNTS_SCHEMA))
    return tables

"""A whole rank's plan: a slice for every value of a rank (`family`: one per family), planned
from one read of the taxon index and the lineage summary of one generation.

The taxon index is cut into one small table per value (sorted once, not searched once per
value, which at 13,088 families is 13,088 scans of the index), and the values are ordered by
the mirror's order of their first row, which `rank_pass` publishes them in.

Homonyms, the same value under different parents, get path keys as a single slice would: a
value whose rows hold two or more non-NULL values of a rank above it is split at the topmost
such rank (`kingdom=Animalia/genus=Morus`, `kingdom=Plantae/genus=Morus`). Rows of a homonym
whose value at that rank is NULL belong to none of its slices (counted as `unplaced_rows`);
rows whose own rank is NULL are no slice at all (no key names NULL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.errors import StoreError
from tol_dagster.schema import RANKS
from tol_dagster.slices.counts import expected_count
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.locate import entry_spans, locatable, locate
from tol_dagster.store.mirror_files import MirrorFile


@dataclass(frozen=True)
class RankValue:
    """One slice of a rank: its key, the taxon index entries it reads, its row count."""

    key: SliceKey
    index: pa.Table
    rows: int
    built_from_rows: list[list[object]]
    #: (file position, row) of its first row: values are published in this order.
    first: tuple[int, int]


@dataclass(frozen=True)
class RankPlan:
    """The slices of a rank with at least `min_rows` rows, in the mirror's order of their first
    row; `below_min_rows` values left out; `unplaced_rows` see the module's docstring."""

    rank: str
    min_rows: int
    values: list[RankValue]
    below_min_rows: int
    unplaced_rows: int


def plan_rank(
    rank: str, index: pa.Table, lineage: pa.Table, files: Sequence[MirrorFile], min_rows: int = 1
) -> RankPlan:
    """Every slice of `rank` (see the module's docstring), from the taxon index and the lineage
    summary of the same generation as `files`."""
    if rank not in RANKS:
        raise ValueError(f"unknown rank {rank!r}; expected one of {', '.join(RANKS)}")
    keys, unplaced = _keys(rank, lineage)
    entries = {r: _entries_by_value(index, r) for r in RANKS[: RANKS.index(rank) + 1]}
    order = {f.name: position for position, f in enumerate(files)}
    sha256 = {f.name: f.sha256 for f in files}
    values, below = [], 0
    for key, counted in keys.items():
        sub = _sub_index(index, entries, key)
        # The lineage counts exactly the rows of a key but for `species`: its keys are
        # binomials, which the filter also matches as genus + epithet.
        rows = counted if rank != "species" else expected_count(key, sub, files)
        if rows < min_rows:
            below += 1
            continue
        own = len(key.conditions) == 1 and locatable(key.rank, key.value)  # `sub` is all its own
        spans = entry_spans(sub) if own else (locate(key, sub) or {})
        unknown = sorted(set(spans) - set(order))
        if unknown:
            raise StoreError(
                f"the taxon index names {unknown[0]}, which is not in the mirror: the index is "
                "older than the mirror; rebuild it (materialize the config's taxon_index)"
            )
        built = [
            [sha256[name], group, span.start, span.stop, span.rows]
            for name in sorted(spans, key=order.__getitem__)
            for group, span in sorted(spans[name].items())
        ]
        first = min((order[n], s.start) for n, g in spans.items() for s in g.values())
        values.append(RankValue(key, sub, rows, built, first))
    values.sort(key=lambda v: v.first)
    return RankPlan(rank, min_rows, values, below, unplaced)


def _keys(rank: str, lineage: pa.Table) -> tuple[dict[SliceKey, int], int]:
    """The keys of `rank`'s values (path keys for homonyms) with their rows by the lineage
    summary, and the rows no key places."""
    above = list(RANKS[: RANKS.index(rank)])
    table = pa.table({"value": _values(lineage, rank), **{p: lineage[p] for p in above}})
    table = table.append_column("images", lineage["images"]).filter(pc.is_valid(table["value"]))
    counts = table.group_by("value").aggregate(
        [("images", "sum"), *((p, "count_distinct") for p in above)]
    )
    values = counts["value"].to_pylist()
    split = np.column_stack(
        [np.zeros(len(values), dtype=bool)]
        + [counts[f"{p}_count_distinct"].to_numpy() >= 2 for p in above]
    )  # values x (none, ranks above): two or more parents there
    homonyms = {
        v: above[int(np.argmax(row[1:]))] for v, row in zip(values, split, strict=True) if row.any()
    }
    keys = {
        SliceKey(((rank, v),)): n
        for v, n in zip(values, counts["images_sum"].to_pylist(), strict=True)
        if v not in homonyms
    }
    unplaced = 0
    for parent in dict.fromkeys(homonyms.values()):  # one grouping per rank homonyms split at
        named = pa.array([v for v, p in homonyms.items() if p == parent], table["value"].type)
        rows = table.filter(pc.is_in(table["value"], named))
        by_parent = rows.group_by(["value", parent]).aggregate([("images", "sum")])
        columns = (by_parent[c].to_pylist() for c in ("value", parent, "images_sum"))
        for value, x, n in zip(*columns, strict=True):
            if x is None:
                unplaced += n
            else:
                keys[SliceKey(((parent, x), (rank, value)))] = n
    return keys, unplaced


def _values(lineage: pa.Table, rank: str) -> pa.ChunkedArray:
    """Each lineage row's value of `rank` as a key names it (`species`: the binomial, as the
    taxon index has it)."""
    if rank != "species":
        return lineage[rank]
    species, genus = lineage["species"], lineage["genus"]
    joined = pc.binary_join_element_wise(genus, species, " ")
    return pc.if_else(pc.match_substring(species, " "), species, joined)


def _entries_by_value(index: pa.Table, rank: str) -> dict[str, pa.Table]:
    """The index entries of `rank`, one table per value, in the index's (mirror) order."""
    entries = index.filter(pc.equal(index["rank"], rank))
    entries = entries.take(pc.sort_indices(entries, [("value", "ascending")]))  # stable
    values = entries["value"].to_numpy(zero_copy_only=False)
    if not len(values):
        return {}
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    ends = np.append(starts[1:], len(values))
    return {values[s]: entries.slice(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)}


def _sub_index(index: pa.Table, entries: dict[str, dict[str, pa.Table]], key: SliceKey) -> pa.Table:
    """The entries of the index `key` reads: its value's, and for a path key its parent's in
    the row groups of the value's (`entries`: by rank, by value)."""
    own = entries[key.rank].get(key.value) or index.schema.empty_table()
    if len(key.conditions) == 1:
        return own
    (parent, x), _ = key.conditions
    theirs = entries[parent].get(x, index.schema.empty_table())
    groups = pc.binary_join_element_wise(own["file"], pc.cast(own["row_group"], pa.string()), "#")
    mine = pc.binary_join_element_wise(
        theirs["file"], pc.cast(theirs["row_group"], pa.string()), "#"
    )
    return pa.concat_tables([own, theirs.filter(pc.is_in(mine, groups))])

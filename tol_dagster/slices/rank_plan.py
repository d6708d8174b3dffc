"""A whole rank's plan: a slice for every value of a rank (`family`: one per family), planned
from one read of the taxon index and the lineage summary of one generation.

The rank's index entries are sorted by value once and each value keeps only where its entries
lie in that one table (not a table of its own: 868,000 species of the real config would hold
gigabytes of small tables before the first slice); the values themselves are columns
(`PlanValues`), each `RankValue` made when asked for. Row counts come from the lineage summary
(for `species` too, whose filter also matches genus + epithet: one grouping, not a count per
value), and the values are ordered by the mirror's order of their first row, which `rank_pass`
publishes them in.

Homonyms, the same value under different parents, get path keys as a single slice would: a
value whose rows hold two or more non-NULL values of a rank above it is split at the topmost
such rank (`kingdom=Animalia/genus=Morus`, `kingdom=Plantae/genus=Morus`). Rows of a homonym
whose value at that rank is NULL, or one no key can name, belong to none of its slices
(counted as `unplaced_rows`); rows whose own rank is NULL are no slice at all (no key names
NULL), nor are rows whose value no key can name (`unnamed_rows`: a blank value or one holding
a control character, `keys.nameable`; for `species` an epithet whose genus is missing, empty
or holds a space, which no binomial splits back into): upstream holds such dirt, and a key
built from it would fail after its slice was written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.schema import RANKS
from tol_dagster.slices.keys import SliceKey, nameable
from tol_dagster.slices.locate import Spans, entry_spans, index_counts_exactly, indexed_as, locate
from tol_dagster.slices.rank_entries import ByValue, FileOrder, in_row_groups
from tol_dagster.slices.species_counts import species_counts
from tol_dagster.store.mirror_files import MirrorFile


@dataclass(frozen=True, slots=True)
class RankValue:
    """One slice of a rank: its key, its row count, and where its taxon index entries lie in
    the table its plan's values share (`entries[start:stop]`)."""

    key: SliceKey
    rows: int
    #: Its first row as (file position << 40) | row (one int, not a tuple: one per value):
    #: values are published in this order.
    first: int
    entries: pa.Table
    start: int
    stop: int

    @property
    def index(self) -> pa.Table:
        """The taxon index entries the slice reads (a view, made when asked for)."""
        return self.entries.slice(self.start, self.stop - self.start)

    def spans(self) -> Spans:
        """Where its rows are, by file and row group."""
        if _one_run(self.key):
            return entry_spans(self.index)
        return locate(self.key, self.index) or {}


class PlanValues(Sequence[RankValue]):
    """A plan's values as columns, each `RankValue` made when asked for: the values' names in
    one Arrow array, their rows, first rows and runs of entries in numpy arrays, the few path
    keys apart. Why: a `RankValue` and its key held per value were ~380 bytes of Python
    objects, 0.33 GB for 868,000 species held by the pass while its workers run."""

    def __init__(
        self, keys: Sequence[SliceKey], rows: np.ndarray, first: np.ndarray,
        ranges: np.ndarray, entries: pa.Table,
    ) -> None:  # fmt: skip
        self.rank = keys[0].rank if keys else ""
        self.names = pa.array([key.value for key in keys], pa.string())
        self.paths = {i: key for i, key in enumerate(keys) if len(key.conditions) > 1}
        self.rows, self.first = rows.astype(np.int64), first.astype(np.int64)
        self.ranges, self.entries = ranges.astype(np.int64), entries

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> RankValue: ...
    @overload
    def __getitem__(self, i: slice) -> list[RankValue]: ...
    def __getitem__(self, i: int | slice) -> RankValue | list[RankValue]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[i]  # a negative index counts from the end; IndexError past it
        return self._value(i, self.names[i].as_py())

    def __iter__(self) -> Iterator[RankValue]:
        for start in range(0, len(self), 65_536):  # names taken out of Arrow a run at a time
            names = self.names.slice(start, 65_536).to_pylist()
            yield from (self._value(start + j, name) for j, name in enumerate(names))

    def _value(self, i: int, name: str) -> RankValue:
        key = self.paths.get(i) or SliceKey(((self.rank, name),))
        start, stop = self.ranges[i].tolist()
        return RankValue(key, int(self.rows[i]), int(self.first[i]), self.entries, start, stop)


@dataclass(frozen=True)
class RankPlan:
    """The slices of a rank with at least `min_rows` rows, in the mirror's order of their first
    row; `below_min_rows` values left out; `unplaced_rows` and `unnamed_rows` see the module's
    docstring, `unnamed_values` the distinct values of those rows (an epithet left apart)."""

    rank: str
    min_rows: int
    values: Sequence[RankValue]
    below_min_rows: int
    unplaced_rows: int
    unnamed_rows: int = 0
    unnamed_values: tuple[str, ...] = ()


def plan_rank(
    rank: str, index: pa.Table, lineage: pa.Table, files: Sequence[MirrorFile], min_rows: int = 1
) -> RankPlan:
    """Every slice of `rank` (see the module's docstring), from the taxon index and the lineage
    summary of the same generation as `files`."""
    if rank not in RANKS:
        raise ValueError(f"unknown rank {rank!r}; expected one of {', '.join(RANKS)}")
    keys, unplaced, unnamed = _keys(rank, lineage)
    if rank == "species":  # binomials, which the filter also matches as genus + epithet
        keys = dict(zip(keys, species_counts(lineage, list(keys)), strict=True))
    planned = [key for key, rows in keys.items() if rows >= min_rows]
    order = FileOrder.of(files)
    own = ByValue(index, rank)
    ranges, extra = _entry_ranges(index, own, planned)
    entries = pa.concat_tables([own.table, *extra]).combine_chunks()
    firsts = _firsts(entries, planned, ranges, order)
    at = np.argsort(firsts, kind="stable")  # ties keep the keys' order
    rows = np.fromiter((keys[key] for key in planned), np.int64, len(planned))
    values = PlanValues(
        [planned[i] for i in at.tolist()], rows[at], firsts[at], ranges[at], entries
    )
    pa.default_memory_pool().release_unused()  # the sorts' and groupings' buffers
    return RankPlan(rank, min_rows, values, len(keys) - len(planned), unplaced, *unnamed)


def built_from_rows(value: RankValue, order: FileOrder) -> list[list[object]]:
    """The rows `value`'s slice is built from, as its record keeps them: [[sha256, row group,
    start, stop, rows]] in the mirror's order (`rank_pass` rebuilds a slice when they change)."""
    spans = value.spans()
    return [
        [order.sha256[name], group, span.start, span.stop, span.rows]
        for name in sorted(spans, key=order.position.__getitem__)
        for group, span in sorted(spans[name].items())
    ]


def _entry_ranges(
    index: pa.Table, own: ByValue, keys: list[SliceKey]
) -> tuple[np.ndarray, list[pa.Table]]:
    """Each key's [start, stop) in its rank's sorted entries, past them for a key whose entries
    are not one run (`extra`, in order: a binomial's and its epithet's, see
    `locate.indexed_as`; a path key's and its parent's in the same row groups)."""
    ranges = np.stack(own.ranges([k.value for k in keys]), axis=1)
    irregular = [i for i, key in enumerate(keys) if not _one_run(key)]
    aliases = [indexed_as(keys[i].rank, keys[i].value)[1:] for i in irregular]
    aliased = iter(own.runs([v for names in aliases for v in names]))
    extra = [
        pa.concat_tables([own.slice(*ranges[i]), *(next(aliased) for _ in names)])
        for i, names in zip(irregular, aliases, strict=True)
    ]
    paths = [j for j, i in enumerate(irregular) if len(keys[i].conditions) > 1]
    for parent in dict.fromkeys(keys[irregular[j]].conditions[0][0] for j in paths):
        mine = [j for j in paths if keys[irregular[j]].conditions[0][0] == parent]
        theirs = ByValue(index, parent).runs([keys[irregular[j]].conditions[0][1] for j in mine])
        for j, entries in zip(mine, theirs, strict=True):
            extra[j] = pa.concat_tables([extra[j], in_row_groups(entries, extra[j])])
    stops = own.table.num_rows + np.cumsum([t.num_rows for t in extra], dtype=np.int64)
    for i, table, stop in zip(irregular, extra, stops, strict=True):
        ranges[i] = (stop - table.num_rows, stop)
    return ranges, extra


def _one_run(key: SliceKey) -> bool:
    """The rows of `key` are exactly its value's entries: one run of its rank's."""
    return len(key.conditions) == 1 and index_counts_exactly(key.rank, key.value)


def _firsts(
    entries: pa.Table, keys: list[SliceKey], ranges: np.ndarray, order: FileOrder
) -> np.ndarray:
    """Each key's first row as `RankValue.first`: the least of its own entries' (all of them
    at once), from its spans for a path key or a value the index cannot locate (if none, past
    the last file)."""
    positions = order.positions(entries["file"])
    first = np.full(len(keys), (len(order.position) << 40), dtype=np.int64)
    own = [i for i, key in enumerate(keys) if _one_run(key) and ranges[i, 1] > ranges[i, 0]]
    packed = (positions << 40) | entries["row_start"].to_numpy()
    if own:
        # Each key's entries are one run; reduceat takes the least of each run from its start.
        starts = ranges[own, 0]
        bounds = np.unique(np.concatenate([starts, ranges[own, 1]]))
        least = np.minimum.reduceat(packed, bounds[bounds < len(packed)])
        first[own] = least[np.searchsorted(bounds[bounds < len(packed)], starts)]
    for i in sorted(set(range(len(keys))) - set(own)):
        value = RankValue(keys[i], 0, 0, entries, int(ranges[i, 0]), int(ranges[i, 1]))
        spans = value.spans()  # of `entries`, whose files `positions` knows
        if spans:
            first[i] = min(
                (order.position[n] << 40) | s.start for n, g in spans.items() for s in g.values()
            )
    return first


def _keys(
    rank: str, lineage: pa.Table
) -> tuple[dict[SliceKey, int], int, tuple[int, tuple[str, ...]]]:
    """The keys of `rank`'s values (path keys for homonyms) with their rows by the lineage
    summary, the rows no key places, and the rows and values no key can name."""
    above = list(RANKS[: RANKS.index(rank)])
    table = pa.table({"value": _values(lineage, rank), **{p: lineage[p] for p in above}})
    table = table.append_column("images", lineage["images"])
    no_binomial = pc.and_(pc.is_valid(lineage[rank]), pc.is_null(table["value"]))
    table = table.filter(pc.is_valid(table["value"]))
    counts = table.group_by("value").aggregate(
        [("images", "sum"), *((p, "count_distinct") for p in above)]
    )
    can_name = nameable(counts["value"])
    odd = counts.filter(pc.invert(can_name))
    left = (pc.filter(lineage["images"], no_binomial), odd["images_sum"])
    unnamed = (sum(pc.sum(r).as_py() or 0 for r in left), tuple(sorted(odd["value"].to_pylist())))
    counts = counts.filter(can_name)
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
        parents = nameable(by_parent[parent].fill_null("")).to_pylist()
        for value, x, n, ok in zip(*columns, parents, strict=True):
            if ok:
                keys[SliceKey(((parent, x), (rank, value)))] = n
            else:
                unplaced += n
    return keys, unplaced, unnamed


def _values(lineage: pa.Table, rank: str) -> pa.ChunkedArray:
    """Each lineage row's value of `rank` as a key names it (`species`: the binomial, as the
    taxon index has it: NULL where an epithet's genus would not split back off it)."""
    if rank != "species":
        return lineage[rank]
    species, genus = lineage["species"], lineage["genus"]
    splits = pc.and_(
        pc.and_(pc.not_equal(genus, ""), pc.not_equal(species, "")),
        pc.invert(pc.match_substring(genus, " ")),
    )
    joined = pc.if_else(
        splits, pc.binary_join_element_wise(genus, species, " "), pa.scalar(None, pa.string())
    )
    return pc.if_else(pc.match_substring(species, " "), species, joined)

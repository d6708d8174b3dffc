"""A whole rank in one pass: a slice for every value of a rank (`family`: one per family), in
one process over one pinned generation, planned from one read of the taxon index.

Each value's slice is exactly the slice its own key gives (`extract_slice`, the same checks,
the same bytes): the pass only plans them together. The taxon index is cut into one small
table per value (sorted once, not searched once per value, which at 13,088 families is 13,088
scans of the index), and the values are published in the mirror's order of their first row,
one at a time, each atomically, so memory is that of one slice.

Homonyms, the same value under different parents, get path keys as a single slice would: a
value whose rows hold two or more non-NULL values of a rank above it is split at the topmost
such rank (`kingdom=Animalia/genus=Morus`, `kingdom=Plantae/genus=Morus`). Rows of a homonym
whose value at that rank is NULL belong to none of its slices (counted as `unplaced_rows`);
rows whose own rank is NULL are no slice at all (no key names NULL).

After a resync a value is rebuilt only when the rows it was built from changed: its record
keeps, per mirror file, the file's sha256 and the row spans (`built_from_rows`), compared
with the new index's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.errors import StoreError, ValidationFailed
from tol_dagster.schema import RANKS
from tol_dagster.slices import rank_workers, records
from tol_dagster.slices.checks import slice_checks
from tol_dagster.slices.counts import expected_count
from tol_dagster.slices.extract import SliceResult, extract_slice
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.locate import locate
from tol_dagster.store.durable import fsync_dir
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.renames import DeferredRenames

#: The record field naming the rank pass that built a slice (the catalog lists such slices).
RANK_PASS = "rank_pass"
#: The record field holding the rows a slice was built from: [[sha256, group, start, stop, rows]].
BUILT_FROM_ROWS = "built_from_rows"


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


@dataclass
class RankResult:
    """What a pass did: slices rebuilt (with their results), left as built, removed."""

    rank: str
    built: list[SliceResult] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
        spans = locate(key, sub) or {}
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


def publish_rank(
    plan: RankPlan,
    files: Sequence[MirrorFile],
    *,
    schema: pa.Schema,
    layout: Layout,
    config: str,
    commit: str,
    generation: str,
    keep: set[str] = frozenset(),  # type: ignore[assignment]
    checked: bool = True,
    workers: int = 1,
) -> RankResult:
    """Publish every slice of `plan` whose rows changed since it was built (or never built),
    each checked and renamed into place, its record written after it (`_Recorder`), over up to
    `workers` processes (`rank_workers`); then remove the slices an earlier pass of this rank
    made that the plan no longer has (unless named in `keep`: they are also slices of their
    own). A value whose checks fail is not published (its file is left as it was) and the pass
    goes on; `ValidationFailed` then names every such value. `checked` False skips the checks
    (the benchmark measures them apart)."""
    started = time.perf_counter()
    result = RankResult(plan.rank)
    todo = []
    for value in plan.values:
        out = layout.slices_dir(config) / value.key.file_name
        if _unchanged(records.slice_record_named(layout, config, value.key.name), value, out):
            result.unchanged.append(value.key.name)
        else:
            todo.append(value)
    parts = [_Part(p) for p in rank_workers.split(todo, [v.rows for v in todo], workers)]
    target = Target(files, schema, layout, config, commit, generation, plan.rank, checked)
    failures = []
    for built, failed in rank_workers.run_parts(publish_values, parts, target=target):
        result.built += built
        failures += failed
    result.removed = _remove_dropped(layout, config, plan, keep)
    result.seconds = time.perf_counter() - started
    if failures:
        raise ValidationFailed(
            f"{plan.rank}: {len(failures)} of {len(plan.values)} slices not published (the "
            "others are):\n" + "\n".join(failures)
        )
    return result


class _Part(list[RankValue]):
    """A worker's values, pickled with their index entries in one table (a value's own is a
    slice of the rank's, which pickles all its buffers; 1,750 tables one by one took 0.6 s)."""

    def __reduce__(self) -> tuple[Any, ...]:
        entries = pa.concat_tables([v.index for v in self]).combine_chunks() if self else None
        sizes = [v.index.num_rows for v in self]
        fields = [(v.key, v.rows, v.built_from_rows, v.first) for v in self]
        return (_unpack, (fields, sizes, entries))


def _unpack(
    fields: list[tuple[SliceKey, int, list[list[object]], tuple[int, int]]],
    sizes: list[int],
    entries: pa.Table | None,
) -> list[RankValue]:
    """A `_Part`'s values again, each index a slice of the one table."""
    if entries is None:
        return []
    starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64)
    return [
        RankValue(key, entries.slice(int(start), size), rows, built, first)
        for (key, rows, built, first), start, size in zip(fields, starts, sizes, strict=True)
    ]


@dataclass(frozen=True)
class Target:
    """What a pass publishes from and to, the same for each of its values (and workers)."""

    files: Sequence[MirrorFile]
    schema: pa.Schema
    layout: Layout
    config: str
    commit: str
    generation: str
    rank: str
    checked: bool


def publish_values(values: list[RankValue], target: Target) -> tuple[list[SliceResult], list[str]]:
    """Publish `values` in order (one worker's part of a pass): their results, and the words of
    each value whose checks failed."""
    built, failures = [], []
    renames = DeferredRenames()
    recorder = _Recorder(target.layout, target.config, renames)
    try:
        for value in values:
            if rank_workers.parent_gone():
                break
            try:
                result = _publish_value(value, target, renames)
            except ValidationFailed as error:
                failures.append(str(error))
                continue
            record = records.slice_record(
                target.config, value.key, result, commit=target.commit,
                generation=target.generation,
                how={RANK_PASS: target.rank, BUILT_FROM_ROWS: value.built_from_rows},
            )  # fmt: skip
            recorder.add(record)
            built.append(result)
    finally:
        with renames:
            recorder.close()
    return built, failures


def _publish_value(value: RankValue, target: Target, renames: DeferredRenames) -> SliceResult:
    """One value's slice, exactly as its own key would build it, with its blocking checks;
    put in place by `renames` (its fsync overlaps the next value's work)."""
    files, layout, config = target.files, target.layout, target.config

    def verify(path: Path) -> list:
        return slice_checks(
            path, value.key, value.rows, target.schema, files, value.index, layout=layout,
            config=config,
        )  # fmt: skip

    out = layout.slices_dir(config) / value.key.file_name
    return extract_slice(
        value.key, files, value.index, out, schema=target.schema,
        verify=verify if target.checked else None, sync_dir=False, publish=renames.publish,
    )  # fmt: skip


#: Values published between two syncs of the slices' folder (see `_Recorder`).
SYNC_EVERY = 64


class _Recorder:
    """Records of published slices, written in groups: once their slices are in place
    (`renames`), one sync of the slices' folder makes the renames durable, then their records
    are queued to `renames` too, and their folder is synced at the next group (or at `close`):
    a record never outlives its slice on disk, and a record lost in a crash costs a rebuild.
    Two folder syncs per group instead of two per slice, and every file's fsync overlaps the
    next slices' work (an fsync costs milliseconds)."""

    def __init__(self, layout: Layout, config: str, renames: DeferredRenames) -> None:
        self.layout, self.config, self.renames = layout, config, renames
        self.pending: list[dict[str, object]] = []
        self.queued = False  # records queued since the records' folder was last synced

    def add(self, record: dict[str, object]) -> None:
        self.pending.append(record)
        if len(self.pending) >= SYNC_EVERY:
            self.flush()

    def flush(self) -> None:
        """Queue the pending records once their slices are durably in place, and make the
        records queued before them durable."""
        self.renames.wait()
        self._sync_records()
        if not self.pending:
            return
        fsync_dir(self.layout.slices_dir(self.config))
        for record in self.pending:
            records.save_slice_record(
                self.layout, self.config, record, sync_dir=False, publish=self.renames.publish
            )
        self.pending, self.queued = [], True

    def close(self) -> None:
        """Every record in place and durable."""
        self.flush()
        self.renames.wait()
        self._sync_records()

    def _sync_records(self) -> None:
        if self.queued:
            fsync_dir(self.layout.slice_records_dir(self.config))
            self.queued = False


def _unchanged(record: dict | None, value: RankValue, out: Path) -> bool:
    """The slice at `out` was built from exactly these rows and is still there, whole."""
    if record is None or record.get(BUILT_FROM_ROWS) != value.built_from_rows:
        return False
    try:
        return out.stat().st_size == record.get("bytes") and record.get("path") == str(out)
    except OSError:
        return False


def _remove_dropped(layout: Layout, config: str, plan: RankPlan, keep: set[str]) -> list[str]:
    """Remove the slices (records and files) of earlier passes of this rank that the plan no
    longer has: values gone from the mirror, or now under `min_rows`."""
    names = {v.key.name for v in plan.values}
    dropped = {
        str(r["name"])
        for r in records.slice_records(layout, config)
        if r.get(RANK_PASS) == plan.rank and r["name"] not in names and r["name"] not in keep
    }
    for path in records.remove_slice_records_named(layout, config, dropped):
        if path.parent == layout.slices_dir(config):
            path.unlink(missing_ok=True)
    return sorted(dropped)

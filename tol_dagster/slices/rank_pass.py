"""A whole rank in one pass: every slice of a `rank_plan`, in one process (or a few,
`rank_workers`) over one pinned generation.

Each value's slice is exactly the slice its own key gives (`extract_slice`, the same checks,
the same bytes): the pass only publishes them together, in the mirror's order of their first
row, one at a time, each atomically, so memory is that of one slice.

After a resync a value is rebuilt only when the rows it was built from changed: its record
keeps, per mirror file, the file's sha256 and the row spans (`built_from_rows`), compared
with the new index's.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tol_dagster.errors import ValidationFailed
from tol_dagster.slices import rank_workers, records
from tol_dagster.slices.check_batch import CheckBatch, Held
from tol_dagster.slices.checks import slice_checks
from tol_dagster.slices.extract import SliceResult, extract_slice
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.rank_entries import FileOrder
from tol_dagster.slices.rank_plan import RankPlan, RankValue, built_from_rows
from tol_dagster.slices.rank_results import Built, BuiltSlices
from tol_dagster.store.durable import fsync_dir
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.renames import DeferredRenames
from tol_dagster.validation.checks import CheckResult

#: The record field naming the rank pass that built a slice (the catalog lists such slices).
RANK_PASS = "rank_pass"
#: The record field holding the rows a slice was built from: [[sha256, group, start, stop, rows]].
BUILT_FROM_ROWS = "built_from_rows"


@dataclass
class RankResult:
    """What a pass did: slices rebuilt, left as built, removed."""

    rank: str
    built: BuiltSlices = field(default_factory=BuiltSlices)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
    rebuild: frozenset[str] = frozenset(),
    checked: bool = True,
    workers: int = 1,
) -> RankResult:
    """Publish every slice of `plan` whose rows changed since it was built (or never built),
    and those named in `rebuild` whatever their record says (drifted: their record cannot
    tell), each checked and renamed into place, its record written after it (`_Recorder`),
    over up to `workers` processes (`rank_workers`); then remove the slices an earlier pass of
    this rank made that the plan no longer has (unless named in `keep`: they are also slices
    of their own). A value whose checks fail is not published (its file is left as it was)
    and the pass goes on; `ValidationFailed` then names every such value. `checked` False
    skips the checks (the benchmark measures them apart)."""
    started = time.perf_counter()
    _release_freed()
    result = RankResult(plan.rank)
    todo, weights, order = array("q"), array("q"), FileOrder.of(files)  # by place in the plan
    listed, slices = records.RecordFolder(layout, config), layout.slices_dir(config)
    for i, value in enumerate(plan.values):
        record = listed.take(value.key)
        if (
            record is not None
            and value.key.name not in rebuild
            and _unchanged(record, value, order, slices / value.key.file_name)
        ):
            result.unchanged.append(value.key.name)
        else:
            todo.append(i)
            weights.append(value.rows)
    parts = [_chunks(plan.values, p) for p in rank_workers.split(todo, weights, workers)]
    target = Target(files, order, schema, layout, config, commit, generation, plan.rank, checked)
    failures, outcomes = [], rank_workers.run_parts(publish_values, parts, target=target)
    while outcomes:  # each part's results dropped once kept (~65 MB a part of 434,000 species)
        built, failed = outcomes.pop(0)
        result.built.extend(built)
        failures += failed
        del built
    result.removed = _remove_dropped(listed, slices, plan.rank, keep)
    result.seconds = time.perf_counter() - started
    if failures:
        raise ValidationFailed(
            f"{plan.rank}: {len(failures)} of {len(plan.values)} slices not published (the "
            "others are):\n" + "\n".join(failures)
        )
    return result


def _release_freed() -> None:
    """Give back the memory that planning freed, which this process would otherwise hold while
    its workers run: Arrow's pool keeps freed pages (~200 MB at 868,000 species, the index and
    lineage read), glibc's heap the plan's Python objects (~110 MB; `malloc_trim`, where the C
    library has it)."""
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


#: Values a worker is sent at a time (it holds one chunk, not its whole part).
CHUNK_VALUES = 1_024


def _chunks(values: Sequence[RankValue], at: Sequence[int]) -> list[_Chunk]:
    """The values of `values` at places `at`, in chunks of CHUNK_VALUES (`_Chunk`)."""
    places = np.asarray(at, dtype=np.int64)
    return [
        _Chunk(values, places[i : i + CHUNK_VALUES]) for i in range(0, len(places), CHUNK_VALUES)
    ]


class _Chunk:
    """Values of a plan by their places in it, made when iterated (a plan keeps its values as
    columns), pickled for a worker as a list of them with only their own index entries, taken
    from the table their plan's values share into one table."""

    def __init__(self, values: Sequence[RankValue], at: np.ndarray) -> None:
        self.values, self.at = values, at

    def __iter__(self) -> Iterator[RankValue]:
        return (self.values[i] for i in self.at.tolist())

    def __reduce__(self) -> tuple[Any, ...]:
        values = list(self)
        if not values:
            return (_unpack, ([], [], None))
        if any(v.entries is not values[0].entries for v in values):
            raise ValueError("the values of a chunk come from one plan")
        taken = np.concatenate([np.arange(v.start, v.stop, dtype=np.int64) for v in values])
        sizes = [v.stop - v.start for v in values]
        fields = [(v.key, v.rows, v.first) for v in values]
        return (_unpack, (fields, sizes, values[0].entries.take(taken)))


def _unpack(
    fields: list[tuple[SliceKey, int, int]],
    sizes: list[int],
    entries: pa.Table | None,
) -> list[RankValue]:
    """A `_Chunk`'s values again, sharing the one table."""
    if entries is None:
        return []
    stops = np.cumsum(sizes, dtype=np.int64)
    return [
        RankValue(key, rows, first, entries, int(stop - size), int(stop))
        for (key, rows, first), size, stop in zip(fields, sizes, stops, strict=True)
    ]


@dataclass(frozen=True)
class Target:
    """What a pass publishes from and to, the same for each of its values (and workers)."""

    files: Sequence[MirrorFile]
    order: FileOrder
    schema: pa.Schema
    layout: Layout
    config: str
    commit: str
    generation: str
    rank: str
    checked: bool

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for the workers with its schema as Arrow IPC: pyarrow's own pickle of a
        `fixed_size_list` drops its child's name (`emb`'s `element` became `item` in the
        slices that workers wrote, and their footers differed from one written here)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _target, (fields | {"schema": self.schema.serialize().to_pybytes()},)


def _target(fields: dict[str, Any]) -> Target:
    """A `Target` from `Target.__reduce__`'s fields."""
    return Target(**fields | {"schema": pa.ipc.read_schema(pa.py_buffer(fields["schema"]))})


def publish_values(
    chunks: Iterable[list[RankValue]], target: Target
) -> tuple[BuiltSlices, list[str]]:
    """Publish the values of `chunks` in order (one worker's part of a pass, read a chunk at a
    time): their results, and the words of each value whose checks failed. Checked values are
    checked in groups (`CheckBatch`)."""
    built = BuiltSlices()
    failures: list[str] = []
    renames = DeferredRenames()
    recorder = _Recorder(target.layout, target.config, renames)
    batch = CheckBatch(renames.publish)
    pending: dict[str, RankValue] = {}  # built, not yet settled (a failed one stays: few)

    def settle(outcomes: list[SliceResult | ValidationFailed]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, ValidationFailed):
                failures.append(str(outcome))
                continue
            value = pending.pop(outcome.key)
            record = records.slice_record(
                target.config, value.key, outcome, commit=target.commit,
                generation=target.generation,
                how={RANK_PASS: target.rank, BUILT_FROM_ROWS: built_from_rows(value, target.order)},
            )  # fmt: skip
            recorder.add(record)
            built.append(Built.of(outcome))

    try:
        for value in itertools.chain.from_iterable(chunks):
            if rank_workers.parent_gone():
                break
            pending[value.key.name] = value
            if target.checked:
                settle(batch.hold(_held(value, target)))
            else:
                settle([_publish_value(value, target, renames)])
        settle(batch.flush())
    finally:
        batch.discard()
        with renames:
            recorder.close()
    return built, failures


def _publish_value(value: RankValue, target: Target, renames: DeferredRenames) -> SliceResult:
    """One value's slice, exactly as its own key would build it, unchecked (the benchmark
    measures the checks apart); put in place by `renames` (its fsync overlaps the next value's
    work)."""
    out = target.layout.slices_dir(target.config) / value.key.file_name
    return extract_slice(
        value.key, target.files, value.index, out, schema=target.schema, sync_dir=False,
        publish=renames.publish,
    )  # fmt: skip


def _held(value: RankValue, target: Target) -> Held:
    """One value's slice, exactly as its own key would build it, held back as its temp file
    for its blocking checks (`CheckBatch`)."""
    files, layout, config = target.files, target.layout, target.config

    def checks(path: Path, read: pa.Table | None) -> list[CheckResult]:
        return slice_checks(
            path, value.key, value.rows, target.schema, files, value.index, layout=layout,
            config=config, read=read,
        )  # fmt: skip

    out = layout.slices_dir(config) / value.key.file_name
    temps: list[Path] = []
    result = extract_slice(
        value.key, files, value.index, out, schema=target.schema, sync_dir=False,
        publish=lambda temp, _: temps.append(temp),
    )  # fmt: skip
    return Held(value.key, temps[0], out, result, checks)


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
            records.save_slice_record(self.layout, self.config, record, deferred=self.renames)
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


def by_rank_pass(layout: Layout, config: str, names: Iterable[str]) -> dict[str, list[str]]:
    """`names` grouped by the rank whose pass made each slice (its record's RANK_PASS); a name
    without a record (none, damaged, or no longer a key) or made by its own key is left out."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        record = records.record_if_key(layout, config, name)
        rank = record.get(RANK_PASS) if record else None
        if isinstance(rank, str):
            grouped.setdefault(rank, []).append(name)
    return grouped


def _unchanged(record: dict, value: RankValue, order: FileOrder, out: Path) -> bool:
    """The slice at `out`, of `record`, was built from exactly `value`'s rows and is still
    there, whole (its rows are worked out only when it has a record: a first pass of 868,000
    species skips it)."""
    if record.get(BUILT_FROM_ROWS) != built_from_rows(value, order):
        return False
    try:
        recorded = Path(str(record.get("path")))  # of the home it was written in: names compare
        return out.stat().st_size == record.get("bytes") and recorded.name == out.name
    except OSError:
        return False


def _remove_dropped(
    listed: records.RecordFolder, slices: Path, rank: str, keep: set[str]
) -> list[str]:
    """Remove the slices (records and files) of earlier passes of `rank` that the plan no
    longer has (values gone from the mirror, or now under `min_rows`): the records `listed`
    before the pass that none of its values took, unless named in `keep`."""
    dropped = []
    for path, record in listed.rest():
        if record is None:  # damaged: whose it is is unknown, so it is left (the catalog names it)
            continue
        name = str(record.get("name"))
        if record.get(RANK_PASS) == rank and name not in keep:
            published = Path(str(record.get("path", "")))
            if published.parent == slices:  # the file first: a pass killed here retries
                published.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            dropped.append(name)
    return sorted(dropped)

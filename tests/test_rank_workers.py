"""A whole rank over several processes (`slices.rank_workers`): the values cut into contiguous
parts of about equal work; the same slices, bytes and records as one process; a worker's error
raised by the pass; an interrupted pass interrupts its workers; `TOL_RANK_WORKERS`."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror
from test_rank_slices import Ranked

from tol_dagster.devtools.rank_tables import (
    SLICE_CHECKS,
    read_rank_tables,
    results_only,
    write_rank_tables,
)
from tol_dagster.errors import SettingsError
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import Settings
from tol_dagster.slices import rank_pass, rank_workers, records
from tol_dagster.slices.rank_entries import FileOrder
from tol_dagster.slices.rank_plan import RankValue, plan_rank
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout


def test_parts_are_contiguous_balanced_and_never_too_small() -> None:
    values = list(range(1000))
    weights = [10_000 if v < 100 else 10 for v in values]  # heavy values first
    parts = rank_workers.split(values, weights, 2)
    assert [v for part in parts for v in part] == values, "every value once, in order"
    assert len(parts) == 2 and len(parts[0]) < 300, "the heavy start is a part of its own"
    work = [sum(weights[v] + rank_workers.ROWS_PER_VALUE for v in part) for part in parts]
    assert max(work) / min(work) < 1.3
    few = list(range(rank_workers.MIN_VALUES_PER_WORKER + 5))
    assert rank_workers.split(few, [1] * len(few), 8) == [few], "not worth a second process"
    assert rank_workers.split([], [], 2) == []


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the workers started (the parent's side: it sees the monkeypatch)."""
    pids: list[int] = []
    real_start = rank_workers._start

    def counted(task: tuple[Any, ...], items: Sequence[Any]) -> Any:
        process, results = real_start(task, items)
        pids.append(process.pid)
        return process, results

    monkeypatch.setattr(rank_workers, "_start", counted)
    return pids


def test_a_rank_over_two_processes_is_the_same_slices_bytes_and_records(
    small_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[int]
) -> None:
    monkeypatch.setattr(rank_workers, "MIN_VALUES_PER_WORKER", 8)
    results = {}
    for workers in (1, 2):
        ranked = Ranked(sample_mirror(small_sample), Layout(tmp_path / f"home{workers}"))
        plan = ranked.plan("family")
        result = ranked.publish(plan, workers)
        assert [r.key for r in result.built] == [v.key.name for v in plan.values], "in order"
        kept = {
            str(r["name"]): (r["sha256"], r["rows"], r["built_from_rows"])
            for r in records.slice_records(ranked.layout, DEFAULT_CONFIG)
        }
        results[workers] = ({r.key: r.sha256 for r in result.built}, kept)
    assert len(started) == 2, "two worker processes"
    assert results[1] == results[2]


def test_a_pass_reaches_its_workers_with_its_schema_exact(
    small_sample: Path, tmp_path: Path
) -> None:
    """pyarrow's pickle of a `fixed_size_list` drops its child's name: `emb`'s `element` (a
    mirror read by pyarrow names it so) reached the workers as `item`, and the slices they
    wrote had other footers than those written in the pass's own process."""
    files = sample_mirror(small_sample)
    schema = pq.read_schema(files[0].path)
    emb = schema.get_field_index("emb")
    named = pa.list_(pa.field("element", pa.float16()), schema.field(emb).type.list_size)
    schema = schema.set(emb, schema.field(emb).with_type(named))
    target = rank_pass.Target(
        files,
        FileOrder.of(files),
        schema,
        Layout(tmp_path),
        DEFAULT_CONFIG,
        "c",
        "g",
        "genus",
        True,
    )

    back = pickle.loads(pickle.dumps(target))

    assert back.schema.serialize() == schema.serialize() and str(back.schema) == str(schema)
    assert back == target


def test_results_come_back_in_order_and_a_workers_error_is_raised() -> None:
    assert rank_workers.run_parts(sum, [[1, 2], [3], [4, 5, 6]]) == [3, 3, 15]
    with pytest.raises(TypeError, match="unsupported operand"):
        rank_workers.run_parts(sum, [[1], ["a"]])
    assert not rank_workers.parent_gone(), "not a worker"


@pytest.fixture
def part_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers can import `part_work` (this folder on their PYTHONPATH)."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    )


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads peak RSS from /proc (Linux)")
def test_a_worker_reads_its_part_an_item_at_a_time(part_work: None) -> None:
    """A worker holds the item it is on, not its part: a rank pass's part of 434,000 species
    would otherwise be unpickled whole (its values, keys and index entries) before the first."""
    from part_work import peak_rss_after

    part = [bytes([i]) * (1 << 20) for i in range(250)]  # distinct: pickled one by one
    size = 250 << 20
    (read, peak), _ = rank_workers.run_parts(peak_rss_after, [part, [b"x"]])
    assert read == size, "every item, once"
    assert peak < size / 2, f"a worker held {peak >> 20} MB reading a part of {size >> 20} MB"


def test_an_interrupted_pass_interrupts_its_workers(started: list[int], part_work: None) -> None:
    from part_work import sleep_through

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    began = time.monotonic()
    try:
        signal.alarm(2)
        with pytest.raises(KeyboardInterrupt):
            rank_workers.run_parts(sleep_through, [[60], [60]])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - began < 30, "the workers stopped, not waited for"
    assert len(started) == 2
    for pid in started:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: no worker left running


@pytest.mark.parametrize("value", ["0", "-1", "two", "65"])
def test_a_bad_tol_rank_workers_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="TOL_RANK_WORKERS"):
        Settings.from_env({"TOL_RANK_WORKERS": value})


def test_tol_rank_workers_is_read_with_a_default_of_the_usable_cores_up_to_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings.from_env({"TOL_RANK_WORKERS": "3"}).rank_workers == 3
    for cores, default in (({0}, 1), ({0, 1, 2, 3}, 2)):  # pinned (taskset, a cgroup) or not
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, c=cores: c, raising=False)
        assert Settings.from_env({}).rank_workers == default


def test_a_part_is_sent_to_a_worker_with_its_values_own_index_entries_only(
    small_sample: Path, tmp_path: Path
) -> None:
    """A value's entries lie in the table its plan's values share: pickled as is, each value
    would carry the whole."""
    ranked = Ranked(sample_mirror(small_sample), Layout(tmp_path / "home"))
    plan = ranked.plan("family")
    values = sorted(plan.values, key=lambda v: -v.index.num_rows)[:3]
    whole = len(pickle.dumps(values[0].entries))
    sent = pickle.loads(pickle.dumps(_chunk(values)))
    assert len(pickle.dumps(_chunk(values))) < whole / 10
    assert type(sent) is list and len(sent) == 3
    for got, value in zip(sent, values, strict=True):
        assert got.index.equals(value.index)
        assert (got.key, got.rows, got.spans(), got.first) == (
            value.key, value.rows, value.spans(), value.first,
        )  # fmt: skip
    assert pickle.loads(pickle.dumps(_chunk([]))) == []
    other = ranked.plan("genus").values[0]  # another plan's table: its offsets mean nothing here
    with pytest.raises(ValueError, match="one plan"):
        pickle.dumps(_chunk([values[0], other]))


def _chunk(values: list[RankValue]) -> Any:
    return rank_pass._Chunk(values, np.arange(len(values)))


def test_a_part_runs_with_fewer_collections_and_the_threshold_is_restored() -> None:
    before = gc.get_threshold()
    seen = rank_workers.run_parts(lambda part: gc.get_threshold()[0], [[1]])
    assert seen == [rank_workers.YOUNG_OBJECTS] and gc.get_threshold() == before
    with pytest.raises(ZeroDivisionError):
        rank_workers.run_parts(lambda part: 1 / 0, [[1]])
    assert gc.get_threshold() == before


_KILLED_PASS = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from mirror_testing import sample_mirror
from tol_dagster.derived.summaries import read_summary
from tol_dagster.derived.taxon_index import read_taxon_index
from tol_dagster.schema import DEFAULT_CONFIG, expected_schema
from tol_dagster.slices import rank_workers
from tol_dagster.slices.rank_pass import publish_rank
from tol_dagster.slices.rank_plan import plan_rank
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout

rank_workers.MIN_VALUES_PER_WORKER = 8
layout, files = Layout(Path({home!r})), sample_mirror(Path({sample!r}))
index = read_taxon_index(layout, DEFAULT_CONFIG)
plan = plan_rank("genus", index, read_summary(layout, DEFAULT_CONFIG, "lineage"), files)
publish_rank(
    plan, files, schema=expected_schema(DEFAULT_CONFIG), layout=layout, config=DEFAULT_CONFIG,
    commit="c0ffee", generation="g1", workers=2,
)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc (Linux)")
def test_a_pass_killed_with_kill_9_leaves_its_workers_stopping_and_every_slice_whole(
    small_sample: Path, tmp_path: Path
) -> None:
    """kill -9 of the pass mid-way: its workers finish the value they are on, check and
    publish the group of slices they hold, and stop (their parent is gone); every slice on
    disk is whole and recorded, no temp file is left, and the pass run again builds only what
    is missing."""
    ranked = Ranked(sample_mirror(small_sample), Layout(tmp_path / "home"))
    plan = ranked.plan("genus")
    folder = ranked.layout.slices_dir(DEFAULT_CONFIG)
    script = _KILLED_PASS.format(
        tests=str(Path(__file__).parent), home=str(tmp_path / "home"), sample=str(small_sample)
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        workers = workers if len(workers) == 2 else _children(process.pid)
        if len(workers) == 2 and folder.is_dir() and len(list(folder.glob("*.parquet"))) >= 4:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the pass ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stop = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < stop:
        time.sleep(0.05)
    assert len(workers) == 2 and not any(_alive(pid) for pid in workers), "workers stopped"

    published = sorted(p.name for p in folder.iterdir())
    assert published and all(name.endswith(".parquet") for name in published), "no temp file"
    assert len(published) < len(plan.values) // 4, "each worker stopped after its value and group"
    recorded = list(records.slice_records(ranked.layout, DEFAULT_CONFIG))
    assert sorted(Path(str(r["path"])).name for r in recorded) == published, "each recorded"
    for record in recorded:
        assert sha256_file(Path(str(record["path"]))) == record["sha256"], "whole, as recorded"
    resumed = ranked.publish(plan)
    assert len(resumed.unchanged) == len(published)
    assert len(resumed.built) == len(plan.values) - len(published)


def test_a_pass_of_thousands_of_values_reaches_its_workers_in_chunks_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[int]
) -> None:
    """Generated tables of 5,000 species, no mirror: the pass's workers (publishing nothing,
    `rank_tables.results_only`) get every value once, in the plan's order, over several chunks
    each, with its key and rows."""
    write_rank_tables(tmp_path / "tables", 5_000)
    index, lineage, files = read_rank_tables(tmp_path / "tables")
    plan = plan_rank("species", index, lineage, files)
    monkeypatch.setattr(rank_pass, "publish_values", results_only)
    result = rank_pass.publish_rank(
        plan, files, schema=pa.schema([]), layout=Layout(tmp_path / "home"), config="c",
        commit="c", generation="g", workers=2,
    )  # fmt: skip
    assert len(started) == 2 and len(plan.values) > 2 * rank_pass.CHUNK_VALUES
    assert [(b.key, b.rows) for b in result.built] == [(v.key.name, v.rows) for v in plan.values]
    assert {b.checks for b in result.built} == {SLICE_CHECKS}

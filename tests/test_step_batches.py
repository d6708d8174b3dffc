"""Per-file work as Dagster steps: how files are cut into batches, and that a resync whose
fetches run as batches of steps, in one process or in many, publishes the same bytes, records
which worker ran each step, survives a kill between batches and still refuses a bad file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import multiprocess_jobs
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    file_names,
    mirror_view,
    sync_process,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)
from test_sync import CORRUPTIONS

from tol_dagster.batches import (
    MAX_BATCHES,
    BatchPolicy,
    batch_count,
    batches,
    parallelism,
)
from tol_dagster.cluster_settings import ClusterSettings
from tol_dagster.defs.keys import op_name, safe_name
from tol_dagster.defs.mirror.keys import resync_keys
from tol_dagster.defs.mirror.run_config import plan_op_name, resync_run_config, staged_op_name
from tol_dagster.defs.published.jobs import slices_job_name
from tol_dagster.derived import centroids, summaries, taxon_index
from tol_dagster.devtools.localhub import Fault
from tol_dagster.errors import SettingsError
from tol_dagster.resync.facts import facts_path
from tol_dagster.settings import Settings
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store import verified
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

MB = 10**6
GB = 10**9


# --- the batch policy ---------------------------------------------------------------------------


def cut(sizes: list[int], policy: BatchPolicy) -> list[list[int]]:
    """Batches of file indexes."""
    return batches(list(range(len(sizes))), lambda i: sizes[i], policy)


def test_in_one_process_a_small_config_is_one_batch() -> None:
    assert cut([730_000] * 666, BatchPolicy()) == [list(range(666))]


def test_with_workers_each_gets_a_few_batches_of_about_equal_bytes() -> None:
    sizes = [(i % 7 + 1) * MB for i in range(200)]

    made = cut(sizes, BatchPolicy(parallelism=2))

    assert len(made) == 6
    assert [i for batch in made for i in batch] == list(range(200)), "every file once, in order"
    loads = [sum(sizes[i] for i in batch) for batch in made]
    assert max(loads) - min(loads) <= 7 * MB, loads


def test_a_batch_holds_a_bounded_number_of_bytes() -> None:
    sizes = [520 * MB] * 666  # bioclip-2_float16: 666 files, ~346 GB

    made = cut(sizes, BatchPolicy(max_batch_bytes=8 * GB))

    assert len(made) == 44
    assert all(sum(sizes[i] for i in batch) <= 8 * GB + 520 * MB for batch in made)


def test_hundreds_of_files_never_make_hundreds_of_steps() -> None:
    for workers in (1, 2, 8, 64):
        assert batch_count([490 * MB] * 933, BatchPolicy(parallelism=workers)) <= max(
            MAX_BATCHES, workers * 3
        )
    assert batch_count([1] * 933, BatchPolicy(parallelism=4)) == 12


def test_a_file_larger_than_a_batch_is_a_batch_of_its_own() -> None:
    made = cut([1, 20 * GB, 1], BatchPolicy(max_batch_bytes=8 * GB))

    assert made == [[0], [1], [2]]


def test_tol_step_batch_files_fixes_the_files_per_batch() -> None:
    made = cut([GB] * 25, BatchPolicy(parallelism=8, batch_files=10))

    assert [len(batch) for batch in made] == [10, 10, 5]


def test_nothing_to_fetch_is_one_empty_batch() -> None:
    assert cut([], BatchPolicy(parallelism=4)) == [[]]


def test_the_executor_sets_how_many_steps_run_at_once() -> None:
    def steps(env: dict[str, str]) -> int:
        return parallelism(ClusterSettings.from_env(env))

    assert steps({}) == 1
    assert steps({"TOL_EXECUTOR": "in_process", "TOL_WORKERS": "8"}) == 1
    assert steps({"TOL_EXECUTOR": "multiprocess", "TOL_WORKERS": "4"}) == 4
    assert steps({"TOL_EXECUTOR": "celery", "TOL_WORKERS": "2"}) == 2


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1.5"])
def test_a_bad_tol_step_batch_files_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="TOL_STEP_BATCH_FILES"):
        Settings.from_env({"TOL_STEP_BATCH_FILES": value})


def test_tol_step_batch_files_is_read() -> None:
    assert Settings.from_env({"TOL_STEP_BATCH_FILES": "7"}).step_batch_files == 7
    assert Settings.from_env({}).step_batch_files is None


def test_a_resyncs_run_config_goes_to_the_steps_that_consume_it() -> None:
    run_config = resync_run_config(
        CONFIG, commit="abc123", adopt_from="/data", accept_row_loss=True
    )

    fetched = op_name(CONFIG, "fetched")  # the graph, then its plan op
    assert set(run_config["ops"]) == {fetched, staged_op_name(CONFIG)}
    assert run_config["ops"][fetched]["ops"][plan_op_name(CONFIG)]["config"] == {
        "commit": "abc123",
        "adopt_from": "/data",
    }
    assert run_config["ops"][staged_op_name(CONFIG)]["config"] == {"accept_row_loss": True}
    assert resync_run_config(CONFIG) == {"ops": {}}
    with pytest.raises(ValueError, match="accept_everything"):
        resync_run_config(CONFIG, accept_everything=True)


# --- resyncs whose fetches are batches of steps -------------------------------------------------


def step_outputs(instance: dg.DagsterInstance, run_id: str, step: str) -> list[dict[str, object]]:
    """The metadata each `step` step recorded with its output, in step order."""
    found = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        event = record.dagster_event
        if event is not None and step in (event.step_key or ""):
            metadata = event.step_output_data.metadata
            found[event.step_key] = {key: value.value for key, value in metadata.items()}
    return [found[key] for key in sorted(found)]


def fetch_outputs(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, object]]:
    """The metadata each fetch step recorded with its output, by step."""
    return step_outputs(instance, run_id, ".fetch_")


def published_bytes(layout: Layout) -> dict[str, str]:
    """sha256 of every file a resync leaves behind that its steps computed: the mirror's
    files and the per-file results cached by sha256 (facts, uuid hashes, emb digests); the
    notes of when each file was verified only named (they hold an inode and a time)."""
    derived = layout.store_dir(CONFIG) / "derived"
    return {
        **{f"mirror/{name}": sha for name, sha in mirror_view(layout).sha256s.items()},
        **{
            str(path.relative_to(derived)): (
                "a note" if path.name == verified.NOTE_NAME else sha256_file(path)
            )
            for path in sorted(derived.rglob("*"))
            if path.is_file()
        },
    }


@pytest.mark.e2e
def test_a_multiprocess_resync_publishes_the_same_bytes_with_each_step_on_its_worker(
    user: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "1")
    in_process = user.sync()
    assert in_process.code == 0, in_process.text
    monkeypatch.setenv("TOL_HOME", str(tmp_path / "other-home"))
    home = tmp_path / "dagster"  # a persistent instance: the steps' processes share it
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TOL_EXECUTOR", "multiprocess")
    monkeypatch.setenv("TOL_WORKERS", "2")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.execute_job(
            # By file: the steps' processes do not have the tests' folder on their path.
            ReconstructableJob.for_file(multiprocess_jobs.__file__, "resync_job"),
            instance,
            run_config=resync_run_config(CONFIG, commit=user.hub.head_commit()),
            asset_selection=resync_keys(CONFIG),
        )
        assert result.success
        outputs = fetch_outputs(instance, result.run_id)

    names = file_names(user.root)
    assert published_bytes(Layout(tmp_path / "other-home")) == published_bytes(user.layout)
    passed = Layout(tmp_path / "other-home").step_outputs_dir() / result.run_id
    assert list(passed.rglob("planned")), "the steps pass their values in TOL_HOME"
    assert not list(home.rglob("planned")), "not in DAGSTER_HOME (workers need not share it)"
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    assert [o["files"] for o in outputs] == [1] * len(names), "one step per file"
    assert sum(int(str(o["bytes"])) for o in outputs) == sum(
        (user.folder / n).stat().st_size for n in names
    )
    assert {o["worker_host"] for o in outputs} == {socket.gethostname()}
    pids = {o["worker_pid"] for o in outputs}
    assert len(pids) == len(names) and os.getpid() not in pids, "each step in its own process"


def test_each_fetch_step_records_its_worker_in_process(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "2")

    outcome = user.sync()

    assert outcome.code == 0, outcome.text
    [run_id] = outcome.run_ids
    with user.instance() as instance:
        outputs = fetch_outputs(instance, run_id)
    assert [o["files"] for o in outputs] == [2, 1]
    assert {(o["worker_host"], o["worker_pid"]) for o in outputs} == {
        (socket.gethostname(), os.getpid())
    }
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)


def kill_between_batches(process: subprocess.Popen[bytes], first_done: Callable[[], bool]) -> None:
    """SIGKILL `process` once its first batch is done, half a second into the second's wait."""
    try:
        deadline = time.monotonic() + 120
        while not first_done():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the first batch never finished"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.e2e
def test_a_sync_killed_between_batches_loses_nothing(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "1")
    first, *later = file_names(user.root)
    for name in later:  # the second batch waits: the sync is killed while it does
        user.hub.add_fault(Fault("delay", pattern=f"*/{name}", request_kind="lfs_get", delay_s=60))
    first_sha = sha256_file(user.folder / first)
    kill_between_batches(sync_process(), facts_path(user.layout, CONFIG, first_sha).is_file)
    user.reset_counts()  # the faults too

    outcome = user.sync()

    assert outcome.code == 0, outcome.text
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    later_bytes = sum((user.folder / name).stat().st_size for name in later)
    assert user.bytes_served() == later_bytes, "the first batch's file was not fetched again"


def test_a_bad_file_in_one_batch_fails_the_gate_and_publishes_nothing(
    synced: User, small_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "1")
    before = mirror_view(synced.layout)
    good, bad, _ = file_names(synced.root)
    valid_edit(synced.root, good)
    CORRUPTIONS["NaN in emb"].apply(synced, bad)

    refused = synced.sync()

    assert refused.code == 1, refused.text
    assert "check emb_finite failed" in refused.err and bad in refused.err
    assert mirror_view(synced.layout) == before, "nothing published"
    with synced.instance() as instance:
        [run_id] = refused.run_ids
        assert [o["files"] for o in fetch_outputs(instance, run_id)] == [1, 1]


# --- derived tables whose per-file parts are batches of steps -----------------------------------

DERIVED_PARTS = (summaries.SUMMARY_PART, taxon_index.INDEX_PART, centroids.SUMS_PART)


def derived_tables(layout: Layout) -> dict[str, str]:
    """sha256 of every derived table a consumer reads."""
    paths = [*sorted(layout.summary_dir(CONFIG).glob("*.parquet"))]
    paths += [layout.taxon_index_path(CONFIG), layout.centroids_path(CONFIG)]
    return {path.name: sha256_file(path) for path in paths}


def forget_derived(layout: Layout) -> None:
    """Remove the derived tables and every file's parts: the next run builds all again."""
    for part in DERIVED_PARTS:
        for path in (layout.store_dir(CONFIG) / "derived").rglob(part):
            path.unlink()
    for path in derived_tables(layout):
        next(p for p in layout.published_dir(CONFIG).rglob(path)).unlink()


def parts_outputs(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[dict[str, object]]]:
    """The metadata each `parts` step recorded with its output, by derived table."""
    found: dict[str, list[dict[str, object]]] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        event = record.dagster_event
        step = (event.step_key or "") if event is not None else ""
        if event is not None and ".parts_" in step:
            kind = step.split(".parts_")[1].split(f"_{safe_name(CONFIG)}")[0]
            metadata = {k: v.value for k, v in event.step_output_data.metadata.items()}
            found.setdefault(kind, []).append(metadata)
    return found


@pytest.fixture
def derived_home(user: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A persistent Dagster instance (steps in other processes share it) over `user`'s synced
    mirror, both in the environment: what `run_derived` runs against."""
    assert user.sync().code == 0
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TOL_HOME", str(user.home))
    return home


def run_derived() -> str:
    """Run the derived tables' job in a process of its own (see `multiprocess_jobs`), under
    this test's environment; the run's id."""
    done = subprocess.run(
        [sys.executable, multiprocess_jobs.__file__], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


@pytest.mark.e2e
def test_derived_parts_as_steps_of_their_own_give_the_in_process_tables_byte_for_byte(
    user: User, derived_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = derived_home
    run_derived()  # in process, one batch
    in_process = derived_tables(user.layout)
    forget_derived(user.layout)
    monkeypatch.setenv("TOL_EXECUTOR", "multiprocess")
    monkeypatch.setenv("TOL_WORKERS", "2")
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "1")

    run_id = run_derived()

    assert derived_tables(user.layout) == in_process, "the tables differ from in-process"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        outputs = parts_outputs(instance, run_id)
    files = len(file_names(user.root))
    assert sorted(outputs) == ["centroids", "summaries", "taxon_index"]
    for kind, steps in outputs.items():
        assert [o["files"] for o in steps] == [1] * files, f"{kind}: one step per file"
        pids = {o["worker_pid"] for o in steps}
        assert os.getpid() not in pids and len(pids) == files, f"{kind}: a process per step"


def test_derived_parts_already_written_make_no_step_work(user: User, derived_home: Path) -> None:
    home = derived_home
    run_derived()
    built = derived_tables(user.layout)

    again = run_derived()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        outputs = parts_outputs(instance, again)
    assert {kind: [o["files"] for o in steps] for kind, steps in outputs.items()} == {
        "centroids": [0],
        "summaries": [0],
        "taxon_index": [0],
    }, "one empty batch each: every file already has its parts"
    assert derived_tables(user.layout) == built


@pytest.mark.e2e
def test_a_derived_run_killed_between_batches_loses_nothing_and_the_next_does_the_rest(
    user: User, derived_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = derived_home
    monkeypatch.setenv("TOL_STEP_BATCH_FILES", "1")
    files = mirror_view(user.layout).sha256s
    parts = [
        user.layout.derived_dir(CONFIG, sha) / summaries.SUMMARY_PART for sha in files.values()
    ]
    killed = subprocess.Popen(
        [sys.executable, multiprocess_jobs.__file__],
        env={**os.environ, multiprocess_jobs.HOLD_AFTER_FIRST_PART: "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_between_batches(killed, lambda: any(p.is_file() for p in parts))
    assert [p.is_file() for p in parts].count(True) == 1, "one batch done when killed"

    run_id = run_derived()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        outputs = parts_outputs(instance, run_id)
    assert len(outputs["summaries"]) == len(files) - 1, "the killed run's part is kept"
    assert all(p.is_file() for p in parts)
    built = derived_tables(user.layout)
    forget_derived(user.layout)
    run_derived()
    assert derived_tables(user.layout) == built, "the same tables as a build from scratch"


# --- a slice whose extraction is batches of steps ----------------------------------------------


@pytest.mark.e2e
def test_a_slice_extracted_in_steps_of_their_own_is_the_in_process_slice_byte_for_byte(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key("kingdom=Animalia")  # rows in every file of the sample
    assert user.sync().code == 0
    assert user.tol("slice", key.name).code == 0  # in process, one batch
    path = user.layout.slices_dir(CONFIG) / key.file_name
    in_process = sha256_file(path)
    path.unlink()

    done = subprocess.run(
        [str(Path(sys.executable).parent / "tol-dagster"), "slice", key.name],
        env={
            **os.environ,
            "TOL_EXECUTOR": "multiprocess",
            "TOL_WORKERS": "2",
            "TOL_STEP_BATCH_FILES": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert sha256_file(path) == in_process, "the slice differs from the in-process one"
    with user.instance() as instance:
        [run, *_] = instance.get_runs(dg.RunsFilter(job_name=slices_job_name(CONFIG)), limit=1)
        outputs = step_outputs(instance, run.run_id, ".extract_slice_")
    files = len(file_names(user.root))
    assert [o["files"] for o in outputs] == [1] * files, "one step per file"
    assert sum(int(str(o["dagster/row_count"])) for o in outputs) == pq.read_metadata(path).num_rows
    pids = {o["worker_pid"] for o in outputs}
    assert os.getpid() not in pids and len(pids) == files, "each step in its own process"
    assert not list(user.layout.step_outputs_dir().rglob("slice_segments/*.parquet")), (
        "the segments are removed once the slice is published"
    )

"""`TOL_EXECUTOR` beyond one process, against the real services: a resync of 12 files on two
Celery workers (RabbitMQ, PostgreSQL storage) started here, one of them killed with SIGKILL in
the middle of a step, gives the mirror an in-process sync gives; two Celery syncs of one config
never overlap; a broker that is down fails the command with exit 3, naming it; `multiprocess`
gives the same mirror as well, with Dagster's step lines kept off the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from processes import Stack, free_port, running, signal_group
from service_testing import (
    RABBITMQ_URL,
    REDIS_PORT,
    pg_database,
    require_rabbitmq,
    require_redis,
    unique_queue,
)

from tol_dagster.cli.main import main
from tol_dagster.cluster_settings import mask
from tol_dagster.defs.celery_app import check_consumers
from tol_dagster.defs.published.jobs import DERIVED_JOB, slices_job_name
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.devtools.localhub.faults import Fault
from tol_dagster.devtools.sample import build_sample
from tol_dagster.errors import ServiceUnreachable
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest

pytestmark = pytest.mark.e2e

CONFIG = DEFAULT_CONFIG
FILES = 12
BIN = Path(sys.executable).parent
#: Every wait of the Celery tests together, from the first worker's start.
BUDGET_S = 240.0
#: A fetch step's key: `<fetched graph>.fetch_<config>[<batch>]`.
FETCH_STEP = ".fetch_"
#: A derived table's per-file step: `<table's graph>.parts_<table>_<config>[<batch>]`.
PARTS_STEP = ".parts_"
#: A slice's per-file step: `<slices graph>.extract_slice_<config>[<batch>]`.
EXTRACT_STEP = ".extract_slice_"
#: A slice over every file of the sample (both kingdoms' halves are in each of its files).
SLICE = "kingdom=Animalia"
DAGSTER_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - ", re.M)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub folder of 12 small files (a private copy per module: one test edits it)."""
    root = tmp_path_factory.mktemp("upstream") / "hub"
    build_sample(root, rows=2400, files=FILES, seed=11, row_group_size=200)
    return root


@pytest.fixture(scope="module")
def hub(upstream: Path) -> Iterator[LocalHub]:
    with LocalHub(upstream) as served:
        yield served


def _env(hub: LocalHub, home: Path, dagster_home: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOL_")}
    return {
        **env,
        "TOL_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "TOL_HUB_ENDPOINT": hub.endpoint,
        "TOL_REPO_ID": hub.repo_id,
        "PYTHONUNBUFFERED": "1",
        **more,
    }


def _sync(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tol-dagster"), "sync", *flags], env=env, capture_output=True, text=True
    )


def mirror_bytes(home: Path) -> dict[str, object]:
    """Everything a consumer reads of the mirror: each file's sha256, and the manifest's
    entries and commit (when each passed the gate aside)."""
    layout = Layout(home)
    manifest = load_manifest(layout, CONFIG)
    assert manifest is not None, f"no mirror under {home}"
    files = {p.name: sha256_file(p) for p in sorted(layout.mirror_dir(CONFIG).iterdir())}
    entries = [dataclasses.replace(e, validated_at="") for e in manifest.entries]
    return {"files": files, "commit": manifest.upstream_commit, "entries": entries}


@pytest.fixture(scope="module")
def in_process(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The mirror `tol-dagster sync` makes with the default executor, in one process."""
    base = tmp_path_factory.mktemp("in-process")
    done = _sync(_env(hub, base / "home", base / "dagster"))
    assert done.returncode == 0, done.stderr
    return mirror_bytes(base / "home")


@pytest.fixture(scope="module")
def in_process_derived(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The derived tables and a slice over every file, built in one process."""
    base = tmp_path_factory.mktemp("in-process-derived")
    env = _env(hub, base / "home", base / "dagster")
    for command in (["sync"], ["slice", SLICE]):
        done = _tol(env, *command)
        assert done.returncode == 0, done.stderr
    return derived_bytes(base / "home")


def _tol(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tol-dagster"), *argv], env=env, capture_output=True, text=True
    )


def derived_bytes(home: Path) -> dict[str, str]:
    """sha256 of each derived table and of every slice published under `home`."""
    layout = Layout(home)
    paths = [
        *layout.summary_dir(CONFIG).glob("*.parquet"),
        *layout.slices_dir(CONFIG).rglob("*.parquet"),
    ]
    paths += [layout.taxon_index_path(CONFIG), layout.centroids_path(CONFIG)]
    return {str(p.relative_to(layout.published_dir(CONFIG))): sha256_file(p) for p in sorted(paths)}


# --- Celery ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Two `tol-dagster worker`s on a queue of their own, sharing a home and PostgreSQL."""

    stack: Stack
    env: dict[str, str]
    home: Path
    pg_url: str

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def worker_pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.stack.processes.items() if n.startswith("worker")}


def _worker_ready(stack: Stack, name: str) -> bool | None:
    log = stack.logs / f"{name}.log"
    return True if log.exists() and " ready." in log.read_text(errors="replace") else None


@pytest.fixture
def cluster(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Its own home, PostgreSQL database and queue: tests may run in any order, or at once."""
    require_rabbitmq()
    base = tmp_path
    with pg_database() as pg_url:
        monkeypatch.setenv("TOL_DAGSTER_PG_URL", pg_url)  # the instance yaml names it
        env = _env(
            hub,
            base / "home",
            base / "dagster",
            TOL_EXECUTOR="celery",
            TOL_CELERY_BROKER=RABBITMQ_URL,
            TOL_CELERY_QUEUE=unique_queue(),
            TOL_DAGSTER_PG_URL=pg_url,
            TOL_MAX_PARALLEL_DOWNLOADS="2",
            TOL_STEP_BATCH_FILES="2",  # 6 fetch steps for 2 workers
        )
        for stack in running(base / "logs", BUDGET_S):
            for name in ("worker1", "worker2"):  # one after the other: each ready first
                argv = [str(BIN / "tol-dagster"), "worker", "--concurrency", "1"]
                stack.start(name, argv, env)
                stack.wait_for(f"{name} to be ready", lambda n=name, s=stack: _worker_ready(s, n))
            yield Cluster(stack, env, base / "home", pg_url)


def _celery_worker_of(event: dg.EventLogEntry) -> str | None:
    """The worker dagster-celery's "Executing steps … in celery worker" event names."""
    data = event.dagster_event.event_specific_data if event.dagster_event else None
    worker = getattr(data, "metadata", {}).get("Celery worker")
    return None if worker is None else str(worker.value)


def _workers_by_step(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """The workers each fetch step was sent to, in order (more than one: it ran again)."""
    found: dict[str, list[str]] = {}
    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        worker = _celery_worker_of(event)
        if worker is not None and FETCH_STEP in (event.step_key or ""):
            found.setdefault(str(event.step_key), []).append(worker)
    return found


def _recorded_pids(instance: dg.DagsterInstance, run_id: str, step: str = FETCH_STEP) -> list[int]:
    """`worker_pid` of each `step` step's output metadata (the process that ran it)."""
    return [
        int(str(e.dagster_event.step_output_data.metadata["worker_pid"].value))
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        if e.dagster_event is not None and step in (e.step_key or "")
    ]


def _parent(pid: int) -> int | None:
    """The parent of `pid` (a worker's pool process: the worker), None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _run_id(cluster: Cluster, before: set[str]) -> str | None:
    with cluster.instance() as instance:
        new = [r.run_id for r in instance.get_runs() if r.run_id not in before]
    return new[0] if new else None


def test_celery_resync_survives_a_worker_killed_mid_step_and_matches_in_process(
    cluster: Cluster, hub: LocalHub, in_process: dict[str, object]
) -> None:
    hub.add_fault(Fault("delay", request_kind="lfs_get", delay_s=0.4))  # a fetch step lasts > 1 s
    with cluster.instance() as instance:
        before = {r.run_id for r in instance.get_runs()}
    sync = subprocess.Popen(
        [str(BIN / "tol-dagster"), "sync", "--json"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = cluster.stack.wait_for("the sync's run", lambda: _run_id(cluster, before))

        def a_fetch_running() -> tuple[str, str] | None:
            with cluster.instance() as instance:
                sent = _workers_by_step(instance, run_id)
            return min((step, workers[0]) for step, workers in sent.items()) if sent else None

        step, first = cluster.stack.wait_for("a fetch step to start on a worker", a_fetch_running)
        victim = next(n for n, pid in cluster.worker_pids().items() if f"tol-{pid}@" in first)
        process = cluster.stack.processes.pop(victim)  # its death is the test, not a failure
        signal_group(process, 9)
        process.wait(timeout=10)
        out, err = sync.communicate(timeout=BUDGET_S)
    finally:
        hub.clear_faults()
        if sync.poll() is None:
            sync.kill()
    document = json.loads(out)

    assert sync.returncode == 0 and document["exit_code"] == 0, err
    with cluster.instance() as instance:
        run = instance.get_run_by_id(run_id)
        sent = _workers_by_step(instance, run_id)
        successes = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert len(sent[step]) == 2 and sent[step][0] == first and sent[step][1] != first, (
        f"{step} must run again on the surviving worker once its first worker died: {sent}"
    )
    assert [e.step_key for e in successes].count(step) == 1
    assert mirror_bytes(cluster.home) == in_process, "the Celery mirror differs from in-process"


def test_two_celery_syncs_of_one_config_never_overlap(
    cluster: Cluster, in_process: dict[str, object]
) -> None:
    processes = [
        subprocess.Popen(
            [str(BIN / "tol-dagster"), "sync", "--json"],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=BUDGET_S) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], outputs
    run_ids = [json.loads(out)["configs"][CONFIG]["run_id"] for out, _ in outputs]
    with cluster.instance() as instance:
        windows = sorted(_steps_window(instance, run_id) for run_id in run_ids)
        waited = [
            e.message for r in run_ids for e in instance.all_logs(r) if "waiting for" in e.message
        ]
        first = min(run_ids, key=lambda r: _steps_window(instance, r))
        pids = _recorded_pids(instance, first)
    assert windows[1][0] >= windows[0][1], f"two Celery resyncs of {CONFIG} overlapped: {windows}"
    assert any("waiting for resync run" in m for m in waited), "the second never waited"
    assert mirror_bytes(cluster.home) == in_process
    # The first fetched every file, in 6 steps spread over both workers' pool processes.
    assert len(pids) == FILES // 2, pids
    assert {_parent(pid) for pid in pids} == set(cluster.worker_pids().values()), (
        f"the fetch steps did not run on both workers: {pids} vs {cluster.worker_pids()}"
    )


def test_celery_derived_tables_and_a_slice_match_in_process_with_their_steps_on_both_workers(
    cluster: Cluster, in_process_derived: dict[str, str]
) -> None:
    assert _tol(cluster.env, "sync").returncode == 0
    with cluster.instance() as instance:
        before = {r.run_id for r in instance.get_runs()}

    done = _tol(cluster.env, "slice", SLICE)

    assert done.returncode == 0, done.stderr
    assert derived_bytes(cluster.home) == in_process_derived, "Celery's tables differ"
    with cluster.instance() as instance:
        derived_run = next(
            r.run_id
            for r in instance.get_runs()
            if r.run_id not in before and r.job_name == DERIVED_JOB
        )
        pids = _recorded_pids(instance, derived_run, PARTS_STEP)
        [slice_run, *_] = instance.get_runs(dg.RunsFilter(job_name=slices_job_name(CONFIG)))
        extracted = _recorded_pids(instance, slice_run.run_id, EXTRACT_STEP)
    workers = set(cluster.worker_pids().values())
    assert len(pids) == 3 * FILES // 2, "6 parts steps for each of the 3 tables"
    assert {_parent(pid) for pid in pids} == workers, (
        f"the parts steps did not run on both workers: {pids} vs {cluster.worker_pids()}"
    )
    assert len(extracted) >= 3 and {_parent(pid) for pid in extracted} == workers, (
        f"the slice's extract steps did not run on both workers: {extracted} vs {workers}"
    )


def _steps_window(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """From a run's first step start to its last step's end."""
    events = instance.all_logs(run_id)
    starts = [e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START]
    ends = [
        e.timestamp
        for e in events
        if e.dagster_event_type
        in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
    ]
    return min(starts), max(ends)


def test_a_broker_that_is_down_fails_the_sync_with_exit_3_naming_it(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    broker = f"amqp://guest:hunter2@127.0.0.1:{free_port()}//"  # nothing listens there
    env = _env(hub, tmp_path / "home", tmp_path / "dagster", TOL_EXECUTOR="celery")
    for name in list(os.environ):
        if name.startswith("TOL_"):
            monkeypatch.delenv(name)
    for name, value in {**env, "TOL_CELERY_BROKER": broker}.items():
        monkeypatch.setenv(name, value)

    code = main(["sync"])
    err = capsys.readouterr().err

    assert code == 3, err
    first = err.splitlines()[0]
    assert first.startswith("tol-dagster: ") and "Celery broker" in first, err
    assert f"amqp://guest:***@127.0.0.1:{broker.rsplit(':', 1)[1].rstrip('/')}//" in first
    assert "hunter2" not in err
    assert not (tmp_path / "home" / "mirror").exists(), "nothing is published"


#: A Redis database of its own for the Celery tests on Redis.
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/5"
BROKERS = {"rabbitmq": (require_rabbitmq, RABBITMQ_URL), "redis": (require_redis, REDIS_URL)}


def _celery_env(hub: LocalHub, tmp_path: Path, broker: str, queue: str) -> dict[str, str]:
    """A home of its own whose runs send their steps to `queue` on `broker`."""
    return _env(
        hub, tmp_path / "home", tmp_path / "dagster", TOL_EXECUTOR="celery",
        TOL_CELERY_BROKER=broker, TOL_CELERY_QUEUE=queue,
    )  # fmt: skip


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_a_celery_sync_with_no_worker_on_its_queue_exits_3_saying_so(
    hub: LocalHub, tmp_path: Path, broker: str
) -> None:
    """Before, dagster-celery waited for a worker forever, silent, deaf to SIGTERM and SIGINT,
    and the step ran whenever a worker came, for a run long cancelled."""
    require, url = BROKERS[broker]
    require()
    queue = unique_queue()

    done = _sync(_celery_env(hub, tmp_path, url, queue))

    assert done.returncode == 3, done.stderr
    first = done.stderr.splitlines()[0]
    assert f"no `tol-dagster worker` serves the Celery queue '{queue}' on {mask(url)}" in first
    assert not (tmp_path / "home" / "mirror").exists(), "nothing is published"


def test_a_worker_on_redis_is_found_serving_its_queue_and_no_other(
    hub: LocalHub, tmp_path: Path
) -> None:
    """Redis counts no consumers: the workers are asked which queues they serve."""
    require_redis()
    queue = unique_queue()
    env = _celery_env(hub, tmp_path, REDIS_URL, queue)
    for stack in running(tmp_path / "logs", 120):
        stack.start("worker", [str(BIN / "tol-dagster"), "worker", "--concurrency", "1"], env)
        stack.wait_for("the worker to be ready", lambda s=stack: _worker_ready(s, "worker"))

        check_consumers(REDIS_URL, queue)
        with pytest.raises(ServiceUnreachable, match="no `tol-dagster worker` serves"):
            check_consumers(REDIS_URL, unique_queue())


def test_a_worker_whose_broker_is_down_exits_3_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    broker = f"redis://:hunter2@127.0.0.1:{free_port()}/3"  # nothing listens there
    monkeypatch.setenv("TOL_HOME", str(tmp_path))
    monkeypatch.setenv("TOL_CELERY_BROKER", broker)

    code = main(["worker", "--concurrency", "1"])
    err = capsys.readouterr().err

    assert code == 3, err
    assert "Celery broker redis://:***@127.0.0.1:" in err.splitlines()[0] and "hunter2" not in err


# --- multiprocess ----------------------------------------------------------------------------


def test_multiprocess_gives_the_in_process_mirror_without_dagster_lines(
    hub: LocalHub, tmp_path: Path, in_process: dict[str, object]
) -> None:
    env = _env(
        hub,
        tmp_path / "home",
        tmp_path / "dagster",
        TOL_EXECUTOR="multiprocess",
        TOL_WORKERS="2",
        TOL_STEP_BATCH_FILES="6",  # a process per step: two fetch steps are enough here
    )
    done = _sync(env)

    assert done.returncode == 0, done.stderr
    assert mirror_bytes(tmp_path / "home") == in_process
    assert not DAGSTER_LINE.search(done.stderr + done.stdout), done.stderr
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        [run] = instance.get_runs()
        started = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
    assert len({e.dagster_event.pid for e in started if e.dagster_event}) > 1, (
        "the steps must have run in processes of their own"
    )

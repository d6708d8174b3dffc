"""One resync at a time per config (issue 7, item 4): command-line syncs started at the same
instant, the per-run staged state, the lease. The daemon's side is in test_e2e_daemon.py.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from resync_testing import (
    CONFIG,
    User,
    core_sync,
    dagster_home,
    file_names,
    manifest,
    mirror_view,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)

from tol_dagster.defs.keys import asset_key, op_name
from tol_dagster.defs.mirror.resync_slot import lease_holder, resync_lease
from tol_dagster.defs.mirror.run_config import plan_op_name
from tol_dagster.devtools.localhub import Fault
from tol_dagster.errors import ResyncConflict, ValidationFailed
from tol_dagster.hub.client import HubClient
from tol_dagster.resync.gate import run_gate
from tol_dagster.resync.publish import publish
from tol_dagster.resync.stage import stage
from tol_dagster.resync.state import StagedState, load_staged, refresh_remote

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

SYNCS = 3
#: Each file's download is held this long, so the first resync outlasts the others' start-up
#: (opening the instance, creating their runs) on a loaded machine: they must contend.
DOWNLOAD_DELAY_S = 4.0
#: Each process imports everything, then waits for the barrier file: released together, they
#: reach `tol-dagster sync` within milliseconds of each other.
AT_THE_BARRIER = """
import os, sys, time
from tol_dagster.cli.main import main
barrier = sys.argv[1]
while not os.path.exists(barrier):
    time.sleep(0.001)
sys.exit(main(["sync"]))
"""
MIRROR_STEP = asset_key(CONFIG, "mirror").to_python_identifier()


@dataclass(frozen=True)
class Window:
    """One run's resync: from its plan step's start to its `mirror` step's end."""

    run_id: str
    run_started: float
    start: float
    end: float
    published: bool


def _window(instance: dg.DagsterInstance, run_id: str) -> Window:
    events = instance.all_logs(run_id)
    starts = [
        e.timestamp
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.STEP_START
        and e.step_key == f"{op_name(CONFIG, 'fetched')}.{plan_op_name(CONFIG)}"
    ]
    ends = [
        e.timestamp
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS and e.step_key == MIRROR_STEP
    ]
    run_start = [
        e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.RUN_START
    ]
    assert len(starts) == len(ends) == len(run_start) == 1, f"run {run_id}: {starts} {ends}"
    [materialization] = [
        e.asset_materialization
        for e in events
        if e.asset_materialization is not None
        and e.asset_materialization.asset_key == asset_key(CONFIG, "mirror")
    ]
    changes = str(materialization.metadata["changes"].value)
    return Window(run_id, run_start[0], starts[0], ends[0], not changes.startswith("Already"))


def test_three_syncs_started_at_the_same_instant_run_one_after_another(
    user: User, tmp_path: Path
) -> None:
    barrier = tmp_path / "go"
    logs = [(tmp_path / f"sync{i}.out", tmp_path / f"sync{i}.err") for i in range(SYNCS)]
    processes = []
    for out, err in logs:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", AT_THE_BARRIER, str(barrier)],
                    stdout=stdout,
                    stderr=stderr,
                )
            )
    try:
        time.sleep(8)  # every process has imported tol_dagster and Dagster and waits
        assert all(p.poll() is None for p in processes), "a sync ended before the barrier"
        user.hub.add_fault(Fault(kind="delay", delay_s=DOWNLOAD_DELAY_S, request_kind="lfs_get"))
        barrier.touch()
        codes = [p.wait(timeout=240) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [out.read_text() + err.read_text() for out, err in logs]

    assert codes == [0] * SYNCS, "\n---\n".join(texts)
    run_ids = [run for text in texts for run in sync_run_ids(text)]
    assert len(run_ids) == SYNCS, texts
    with user.instance() as instance:
        windows = sorted((_window(instance, r) for r in run_ids), key=lambda w: w.start)
    assert all(w.run_started < windows[0].end for w in windows), (
        f"the syncs did not contend (each started after the first had finished): {windows}"
    )
    for earlier, later in itertools.pairwise(windows):
        assert later.start >= earlier.end, f"two resyncs of {CONFIG} overlapped: {windows}"
    assert [w.published for w in windows] == [True, False, False], (
        f"exactly the first publishes a generation, the others find it current: {windows}"
    )
    assert len(list(user.layout.generations_dir(CONFIG).iterdir())) == 1
    assert any("waiting for resync run" in text for text in texts), texts
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    assert manifest(user.layout).upstream_commit == user.hub.head_commit()


def sync_run_ids(text: str) -> list[str]:
    return re.findall(r"\[run ([0-9a-f-]{36})\]", text)


# --- the staged state belongs to the run that staged it --------------------------------------


def _client(user: User) -> HubClient:
    return HubClient(user.hub.endpoint, user.hub.repo_id, None)


def _stage(user: User, key: str) -> StagedState:
    client = _client(user)
    refresh_remote(user.layout, client, CONFIG)
    state = stage(user.layout, client, CONFIG, key=key, log=lambda _: None)
    refused = [r.message for r in run_gate(user.layout, state, max_row_loss=0.1) if not r.passed]
    assert not refused, refused
    return state


def test_a_run_publishes_its_own_staged_commit_not_a_later_one(synced: User) -> None:
    names = file_names(synced.root)
    valid_edit(synced.root, names[0])
    first = _stage(synced, "run-a")
    valid_edit(synced.root, names[1])
    second = _stage(synced, "run-b")
    assert first.commit != second.commit

    published = publish(synced.layout, CONFIG, key="run-a", log=lambda _: None)

    assert published.commit == first.commit == manifest(synced.layout).upstream_commit
    assert load_staged(synced.layout, CONFIG) is not None


def test_a_stage_planned_against_an_older_generation_is_never_published(synced: User) -> None:
    valid_edit(synced.root, file_names(synced.root)[0])
    stale = _stage(synced, "run-a")
    valid_edit(synced.root, file_names(synced.root)[1])
    newer = core_sync(synced.layout, _client(synced))  # another resync publishes meanwhile
    before = mirror_view(synced.layout)

    with pytest.raises(ResyncConflict, match="another resync published in between"):
        publish(synced.layout, CONFIG, key="run-a", log=lambda _: None)

    assert stale.base_generation != newer.generation
    assert mirror_view(synced.layout) == before
    assert manifest(synced.layout).upstream_commit == newer.commit


def test_nothing_staged_by_a_run_is_refused_by_name(synced: User) -> None:
    with pytest.raises(ValidationFailed, match="nothing is staged by run nobody"):
        publish(synced.layout, CONFIG, key="nobody", log=lambda _: None)


# --- the lease -----------------------------------------------------------------------------------


def test_the_lease_waits_for_its_holder_and_says_whom(user: User) -> None:
    said: list[str] = []
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with resync_lease(user.layout, CONFIG, "run-1", said.append):
            order.append("run-1 in")
            held.set()
            release.wait(10)
            order.append("run-1 out")

    holder = threading.Thread(target=first)
    holder.start()
    assert held.wait(10)
    waiter = threading.Thread(
        target=lambda: _enter(user, "run-2", said, order), name="second lease"
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["run-1 in"], "the second run entered while the first held the lease"
    release.set()
    holder.join(10)
    waiter.join(10)

    assert order == ["run-1 in", "run-1 out", "run-2 in"]
    assert said and "waiting for resync run run-1" in said[0]
    assert (lease_holder(user.layout, CONFIG) or {}).get("run_id") == "run-2"


def _enter(user: User, run_id: str, said: list[str], order: list[str]) -> None:
    with resync_lease(user.layout, CONFIG, run_id, said.append):
        order.append(f"{run_id} in")

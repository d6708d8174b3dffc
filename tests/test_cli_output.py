"""What the command line shows (issue 9, items 4 and 5): a bar and a report on a terminal,
one JSON document with `--json`, nothing but errors with `--quiet`, Dagster's own lines only
with `--verbose`; and runs that the UI can re-execute as they are (the code location's job,
tagged `tol/source`), their killed processes still found.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.definitions_class import SINGLETON_REPOSITORY_NAME
from dagster._core.storage.tags import TagType, get_tag_type
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from resync_testing import (
    CONFIG,
    HubSleeps,
    Outcome,
    User,
    dagster_home,
    edit_upstream,
    file_names,
    hub_sleeps,
    manifest,
    synced,
    synced_home,
    upstream_rows,
    user,
    valid_edit,
)

from tol_dagster.cli.launch import CODE_LOCATION
from tol_dagster.cli.runner import launched_by
from tol_dagster.defs.keys import RESYNC_TAG, SOURCE_TAG
from tol_dagster.defs.mirror.jobs import STATUS_JOB
from tol_dagster.defs.orphaned_runs import (
    HOST_TAG,
    PID_TAG,
    PROCESS_OF_TAG,
    STARTED_TAG,
    cli_run_tags,
    fail_dead_runs,
)
from tol_dagster.devtools.localhub import Fault
from tol_dagster.slices.keys import parse_slice_key

__all__ = ["dagster_home", "hub_sleeps", "synced", "synced_home", "user"]  # fixtures

ROOT = Path(__file__).resolve().parents[1]
FELIDAE = parse_slice_key("family=Felidae")
#: A line of Dagster's own console logger.
DAGSTER_LINE = re.compile(r"^\S+ \S+ \+\d{4} - dagster - ", re.MULTILINE)


def _only_run(user: User, **tags: str) -> dg.DagsterRun:
    with user.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags=tags))
        return run


def _snapshot_the_ui_matches(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """GraphQL's `parentPipelineSnapshotId ?? pipelineSnapshotId` of `run`: the id the UI looks
    for among the loaded jobs (dagster_graphql's `resolve_parentPipelineSnapshotId`)."""
    assert run.job_snapshot_id is not None
    lineage = instance.get_job_snapshot(run.job_snapshot_id).lineage_snapshot
    return lineage.parent_snapshot_id if lineage is not None else run.job_snapshot_id


# --- runs the UI re-executes as they are ----------------------------------------------------------


def test_a_cli_run_is_the_code_locations_job_with_its_origin(user: User) -> None:
    """What dagster-webserver compares before offering Re-execute without "the job may be a
    different version" (`useRepositoryForRun`): the run's origin names the loaded location and
    repository, and its (parent) job snapshot is the one that location serves."""
    assert user.sync().code == 0
    run = _only_run(user, **{RESYNC_TAG: CONFIG})
    target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with (
        user.instance() as instance,
        WorkspaceProcessContext(instance, target) as workspace,
    ):
        location = workspace.create_request_context().get_code_location(CODE_LOCATION)
        repository = location.get_repository(SINGLETON_REPOSITORY_NAME)
        served = repository.get_full_job(run.job_name).identifying_job_snapshot_id
        assert run.asset_selection, "a subset of the resync job: its parent is the served job"
        assert _snapshot_the_ui_matches(instance, run) == served
    assert run.remote_job_origin is not None
    origin = run.remote_job_origin.repository_origin
    assert (origin.code_location_origin.location_name, origin.repository_name) == (
        location.name,
        repository.name,
    )


def test_cli_runs_are_tagged_by_source_with_their_process_hidden(user: User) -> None:
    assert user.sync().code == 0
    with launched_by("demo"):
        assert user.tol("status").code == 0

    synced_run = _only_run(user, **{RESYNC_TAG: CONFIG})
    demo_run = _only_run(user, **{SOURCE_TAG: "demo"})
    assert synced_run.tags[SOURCE_TAG] == "cli"
    assert demo_run.job_name == STATUS_JOB
    for run in (synced_run, demo_run):
        assert run.tags[PID_TAG] == str(os.getpid())
        shown = {key for key in run.tags if get_tag_type(key) != TagType.HIDDEN}
        assert PID_TAG not in shown and HOST_TAG not in shown, "the UI does not list them"
        assert not [key for key in shown if key in ("tol/pid", "tol/host")]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _judged(cases: dict[str, dict[str, str | None]]) -> dict[str, dg.DagsterRunStatus]:
    """Each case a STARTED run of this process with its tags changed (None: left out), then
    `fail_dead_runs`: each case's status after it."""

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def resync_like() -> None:
        noop()

    with dg.instance_for_test() as instance:
        runs = {}
        for case, changes in cases.items():
            run_id = str(uuid.uuid4())
            tags = {**cli_run_tags(run_id), **changes, RESYNC_TAG: CONFIG}
            runs[case] = instance.create_run_for_job(
                resync_like,
                run_id=run_id,
                tags={key: value for key, value in tags.items() if value is not None},
                status=dg.DagsterRunStatus.STARTED,
            ).run_id

        failed = fail_dead_runs(instance)

        stored = {case: instance.get_run_by_id(run_id) for case, run_id in runs.items()}
        status = {case: run.status for case, run in stored.items() if run is not None}
        gone = [runs[case] for case, each in status.items() if each == dg.DagsterRunStatus.FAILURE]
        assert sorted(failed) == sorted(gone)
        return status


FAILED, STARTED = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED


def test_runs_whose_process_died_are_failed_and_no_other() -> None:
    dead = str(_dead_pid())

    status = _judged(
        {
            "dead": {PID_TAG: dead},
            "recorded before pid_of": {PID_TAG: dead, PROCESS_OF_TAG: None, STARTED_TAG: None},
            "alive": {},
            "a retry starting, its parent's tags copied": {PID_TAG: dead, PROCESS_OF_TAG: "x"},
            "on another host": {PID_TAG: dead, HOST_TAG: "elsewhere"},
        }
    )

    assert status == {
        "dead": FAILED,
        "recorded before pid_of": FAILED,
        "alive": STARTED,
        "a retry starting, its parent's tags copied": STARTED,
        "on another host": STARTED,
    }


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_zombie_or_a_pid_given_to_another_process_is_no_run_process() -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    assert ") Z " in Path(f"/proc/{zombie.pid}/stat").read_text()

    status = _judged(
        {
            "zombie": {PID_TAG: str(zombie.pid), STARTED_TAG: None},
            "its pid given to another process": {STARTED_TAG: "1"},
            "alive": {},
        }
    )

    assert status == {
        "zombie": FAILED,
        "its pid given to another process": FAILED,
        "alive": STARTED,
    }
    zombie.wait()


# --- --json: one document on stdout --------------------------------------------------------------


def _document(outcome: Outcome) -> dict[str, Any]:
    """stdout parsed as exactly one JSON document (json.loads refuses anything after it)."""
    document = json.loads(outcome.out)
    assert isinstance(document, dict)
    assert document["exit_code"] == outcome.code
    return document


def test_sync_json_says_what_the_run_fetched_and_published(user: User) -> None:
    outcome = user.sync("--json")

    assert outcome.code == 0, outcome.text
    document = _document(outcome)
    assert (document["command"], document["error"], document["errors"]) == ("sync", None, [])
    facts = document["configs"][CONFIG]
    published = manifest(user.layout)
    assert facts["generation"] == published.generation
    assert facts["upstream_commit"] == published.upstream_commit == user.hub.head_commit()
    assert facts["rows"] == upstream_rows(user.root)
    assert facts["fetched_files"] == len(file_names(user.root)) == facts["files"]
    assert facts["fetched_bytes"] == user.bytes_served()
    assert facts["kept_files"] == 0 and facts["checks_passed"] == facts["checks"] > 10
    with user.instance() as instance:
        run = instance.get_run_by_id(facts["run_id"])
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert not DAGSTER_LINE.search(outcome.err), outcome.err


def test_sync_json_on_a_refusal_has_exit_code_1_and_the_cause(synced: User) -> None:
    bad = file_names(synced.root)[1]
    edit_upstream(synced.folder / bad, lambda t: t.take([t.num_rows - 1, *range(t.num_rows - 1)]))

    outcome = synced.sync("--json")

    assert outcome.code == 1, outcome.text
    document = _document(outcome)
    assert document["error"].startswith(f"{CONFIG}: check sorted_by_contract_key failed")
    assert bad in document["error"]
    assert document["configs"][CONFIG]["exit_code"] == 1
    assert outcome.err.startswith(f"tol-dagster: {CONFIG}: "), "stderr still names the cause"


def test_a_failure_before_any_run_is_one_json_document_too(user: User) -> None:
    outcome = user.sync("--json", "--config", "no-such-config")

    assert outcome.code == 2, outcome.text
    document = _document(outcome)
    assert document["command"] == "sync" and "--config 'no-such-config'" in document["error"]


def test_status_json_success_and_upstream_unreachable(
    synced: User, monkeypatch: pytest.MonkeyPatch, hub_sleeps: HubSleeps
) -> None:
    fine = synced.tol("status", "--json")
    assert fine.code == 0, fine.text
    assert _document(fine)["configs"][CONFIG]["in_sync"] is True
    assert _document(fine)["configs"][CONFIG]["upstream_checked"] is True

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("TOL_HUB_ENDPOINT", closed)
    down = synced.tol("status", "--json")

    assert down.code == 3, down.text
    document = _document(down)
    assert document["command"] == "status" and closed in document["error"]
    entry = document["configs"][CONFIG]
    assert entry["mirror_files"] > 0, "what is known locally is still reported"
    assert (entry["upstream_checked"], entry["in_sync"]) == (False, None), "not 'in sync'"
    assert entry["pending"].startswith("unknown: upstream could not be checked now")
    text = synced.tol("status")
    assert text.code == 3 and "  in_sync: unknown\n" in text.out, text.text


def test_the_audit_of_two_configs_one_not_synced_yet_audits_the_other(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config added to TOL_CONFIGS before its first sync (a new model upstream) made the
    audit exit 2 and audit nothing, the synced config included."""
    monkeypatch.setenv("TOL_CONFIGS", f"{CONFIG},bioclip-2.5-vith14_float16")
    outcome = synced.tol("audit")
    assert outcome.code == 0, outcome.text
    assert f"ok: tol/{CONFIG}/mirror" in outcome.out
    assert "not audited: bioclip-2.5-vith14_float16: no mirror is published yet" in outcome.out
    document = _document(synced.tol("audit", "--json"))
    assert document["exit_code"] == 0 and list(document["not_audited"]) == [
        "bioclip-2.5-vith14_float16"
    ]
    named = synced.tol("audit", "--config", "bioclip-2.5-vith14_float16")
    assert named.code == 2 and "no mirror is published" in named.err, "named: still refused"


def test_slice_json_gives_the_published_slice_and_refusals_their_code(synced: User) -> None:
    outcome = synced.tol("slice", "family=Felidae", "--json")

    assert outcome.code == 0, outcome.text
    document = _document(outcome)
    path = synced.layout.slices_dir(CONFIG) / FELIDAE.file_name
    assert document["path"] == str(path) and document["key"] == "family=Felidae"
    assert document["rows"] == pq.ParquetFile(path).metadata.num_rows > 0
    assert document["bytes"] == path.stat().st_size

    for key, fragment in [("family=Nonexistidae", "no rows in the mirror match"), ("family", "")]:
        refused = synced.tol("slice", key, "--json")
        assert refused.code == 2, refused.text
        assert fragment in _document(refused)["error"]


# --- --quiet, --verbose ----------------------------------------------------------------------------


def test_quiet_prints_nothing_but_errors(synced: User) -> None:
    valid_edit(synced.root, file_names(synced.root)[0])
    done = synced.sync("--quiet")
    assert done.code == 0, done.text
    assert (done.out, done.err) == ("", "")
    assert synced.tol("--quiet", "slice", "family=Felidae").text == ""

    refused = synced.tol("--quiet", "slice", "family=Nonexistidae")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.startswith("tol-dagster: ") and "no rows in the mirror match" in refused.err


def test_dagster_log_lines_only_with_verbose(synced: User) -> None:
    valid_edit(synced.root, file_names(synced.root)[0])
    plain = synced.sync()
    assert plain.code == 0, plain.text
    assert not DAGSTER_LINE.search(plain.text), plain.text
    assert f"{CONFIG}: mirror at " in plain.out and "gate checks passed" in plain.out
    [quiet_run] = plain.run_ids
    with synced.instance() as instance:
        kept = [e.user_message for e in instance.all_logs(quiet_run)]
    assert [m for m in kept if "MB to fetch)" in m], "our INFO lines stay in the event log"

    valid_edit(synced.root, file_names(synced.root)[1])
    verbose = synced.sync("--verbose")
    assert verbose.code == 0, verbose.text
    assert DAGSTER_LINE.search(verbose.err), verbose.err
    [run_id] = verbose.run_ids
    with synced.instance() as instance:
        assert any("STEP_START" in str(e.dagster_event_type) for e in instance.all_logs(run_id))


# --- on a terminal: the bar and the report --------------------------------------------------------


def _on_a_terminal(*argv: str, timeout: float = 240) -> tuple[int, str]:
    """`tol-dagster ARGV` with stdout and stderr on a pseudo-terminal: its exit code and all
    it wrote there (carriage returns and escapes kept)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tol_dagster.cli.main", *argv],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "160"},
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: every writer is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(leader)
    code = process.wait(timeout=30)
    return code, b"".join(chunks).decode(errors="replace")


def test_a_sync_on_a_terminal_draws_a_bar_from_the_bytes_then_reports(user: User) -> None:
    user.hub.add_fault(Fault("bandwidth", request_kind="lfs_get", bytes_per_s=1_500_000))

    code, screen = _on_a_terminal("sync")

    assert code == 0, screen
    frames = [f for f in screen.split("\r") if f.startswith(f"sync {CONFIG} fetch: [")]
    assert len(frames) >= 5, screen
    sizes = [float(m) for f in frames for m in re.findall(r" ([\d.,]+)/[\d.,]+ MB", f)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], "bytes counted as they stream"
    assert any(re.search(r"\d+/3 files .* MB/s ETA \d+ s", f) for f in frames), frames[-3:]
    assert "#" * 24 in screen, "the bar fills"
    assert not DAGSTER_LINE.search(screen)
    report = screen[screen.rindex(f"{CONFIG}: mirror at ") :]
    assert f"generation {manifest(user.layout).generation}: fetched 3 files" in report, report
    assert "13/13 gate checks passed" in report


def test_a_slice_on_a_terminal_reports_rows_and_path(synced: User) -> None:
    code, screen = _on_a_terminal("slice", "family=Felidae")

    assert code == 0, screen
    path = synced.layout.slices_dir(CONFIG) / FELIDAE.file_name
    rows = pq.ParquetFile(path).metadata.num_rows
    assert re.search(rf"{CONFIG} slice family=Felidae: \[#+\.*\] [\d,]+/{rows:,} rows", screen)
    assert f"slice family=Felidae: {rows:,} rows" in screen
    assert screen.rstrip().endswith(str(path))

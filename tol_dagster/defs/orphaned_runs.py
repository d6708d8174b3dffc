"""Orphaned runs: runs whose process died, and the tags that let us tell.

A run executes in one orchestrating process: `tol-dagster sync`'s own, or the run worker the
code server starts for a run the daemon, a sensor or the UI launched. If that process is killed
(SIGKILL, OOM, the whole `make dev` stopped) its run stays STARTED in the instance: the queue
counts it as in progress for ever, so the config's resync pool admits no other run, and the
automation waits for it. Dagster's run monitoring cannot tell with the default run launcher
(it has no health check), and the code server that could is gone with it.

So every run records the process that orchestrates it: a command-line run from its creation
(`cli_run_tags`), every run once its executor starts (`tag_run_process`). Any later sync or
sensor tick marks failed the in-progress runs of this host whose process is gone
(`fail_dead_runs`) and frees any pool slot they claimed. (The leases of
`tol_dagster.defs.mirror.resync_slot` died with the process already.) A pid the system gave to
another process since is told apart by its start time, and a zombie is dead, where `/proc`
tells; a retry's tags, copied from the run it retries, name that run: not the retry's own.

The tags are hidden: Dagster's GraphQL leaves out tags whose key starts with `.dagster/`
(`TagType.HIDDEN`), so the UI shows only `tol/source` (who launched the run: `cli`, `demo`),
and a re-execution from the UI does not inherit the dead process's pid.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

from tol_dagster.defs.keys import source_tags

PID_TAG = ".dagster/tol/pid"
HOST_TAG = ".dagster/tol/host"
STARTED_TAG = ".dagster/tol/pid_started"
PROCESS_OF_TAG = ".dagster/tol/pid_of"

_IN_PROGRESS = [
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.CANCELING,
]


def cli_run_tags(run_id: str, source: str = "cli") -> dict[str, str]:
    """Tags of command-line run `run_id`: who launched it (shown) and its process (hidden)."""
    return {**source_tags(source), **_process_tags(run_id)}


def tag_run_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record this process as the one orchestrating run `run_id` (its executor calls this)."""
    instance.add_run_tags(run_id, _process_tags(run_id))


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed this host's in-progress runs whose orchestrating process is gone."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=_IN_PROGRESS, tags={HOST_TAG: socket.gethostname()})
    )
    failed = []
    for run in runs:
        pid = run.tags.get(PID_TAG)
        if pid is None or run.tags.get(PROCESS_OF_TAG, run.run_id) != run.run_id:
            continue  # none, or a retry's copy of its parent's (no pid_of: an older run's own)
        if _alive(int(pid), run.tags.get(STARTED_TAG)):
            continue
        instance.report_run_failed(
            run, f"process {pid} that ran this run is gone (killed?); marked failed"
        )
        # Dagster frees a failed run's op-level pool slots only from the daemon, and only when
        # run_monitoring.free_slots_after_run_end_seconds is set: free them now.
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def _process_tags(run_id: str) -> dict[str, str]:
    pid = os.getpid()
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), PROCESS_OF_TAG: run_id}
    stat = _stat(pid)
    if stat is not None:
        tags[STARTED_TAG] = stat[1]
    return tags


def _stat(pid: int) -> tuple[str, str] | None:
    """`pid`'s state and when it started, in clock ticks since boot (`/proc`); None where there
    is no `/proc` or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # from field 3; the name before ')' may hold spaces
    return fields[0], fields[19]


def _alive(pid: int, started: str | None) -> bool:
    """`pid` runs and, if `started` is known, is the process that started then (not a zombie,
    not another process given the same pid since)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True  # no /proc to tell: it answered
    state, start = stat
    return state != "Z" and (started is None or start == started)

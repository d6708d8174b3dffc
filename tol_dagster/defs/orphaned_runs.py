"""Orphaned runs: command-line runs whose process died, and the tags that let us tell.

`tol-dagster sync` executes in its own process; if that process is killed (SIGKILL, OOM) its
run stays STARTED in the instance and would hold the config's resync pool in the queue for
ever (the queue counts runs in progress). Every command-line run carries the pid and host that
run it (`cli_run_tags`), so any later sync or sensor tick can tell a resync run is orphaned,
mark it failed and free any pool slot it claimed (`fail_dead_cli_runs`). (The lease of
`tol_dagster.defs.mirror.resync_slot` died with the process already.)

Those two tags are hidden: Dagster's GraphQL leaves out tags whose key starts with `.dagster/`
(`TagType.HIDDEN`), so the UI shows only `tol/source` (who launched the run: `cli`, `demo`),
and a re-execution from the UI does not inherit the dead process's pid.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from tol_dagster.defs.keys import RESYNC_TAG, source_tags

PID_TAG = ".dagster/tol/pid"
HOST_TAG = ".dagster/tol/host"

_IN_PROGRESS = [
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.CANCELING,
]


def cli_run_tags(source: str = "cli") -> dict[str, str]:
    """Tags of a command-line run: who launched it (shown) and its process (hidden)."""
    return {**source_tags(source), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_dead_cli_runs(instance: dg.DagsterInstance, config: str) -> list[str]:
    """Mark failed the in-progress resync runs of `config` whose command-line process is gone."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=_IN_PROGRESS, tags={RESYNC_TAG: config, HOST_TAG: socket.gethostname()}
        )
    )
    failed = []
    for run in runs:
        pid = run.tags.get(PID_TAG)
        if pid is None or _alive(int(pid)):
            continue
        instance.report_run_failed(
            run, f"process {pid} that ran this resync is gone (killed?); marked failed"
        )
        # Dagster frees a failed run's op-level pool slots only from the daemon, and only when
        # run_monitoring.free_slots_after_run_end_seconds is set: free them now.
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

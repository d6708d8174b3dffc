"""One resync at a time per config, whoever launches it (command line, sensor, schedule, UI).

Two layers, because Dagster 1.13 enforces pools in only some places:

- **The pool** `tol_resync_<config>` on the `staged` and `mirror` assets, limit 1, with
  `concurrency.pools.granularity: run` in dagster.yaml: the run queue (the daemon) then admits
  one run holding the pool at a time, counting runs in progress from any launcher, tagged or not
  (the UI's Materialize button adds no tag). At run granularity the queue is the only place the
  pool is enforced: a run executed in a process of its own (`execute_in_process`, what
  `tol-dagster sync` does) claims nothing. At op granularity the pool is claimed per step, so
  another run's `staged` could slip between our `staged` and `mirror`, and the claim itself is a
  read-then-write over separate statements: processes claiming at the same instant can all win.
- **The lease** per config, held by the run's orchestrating process from before its first step
  to after its last: by the executor (`defs.executors`), whichever it wraps, so it holds while
  the steps run in other processes or on Celery workers; in a run executed in process
  (`execute_in_process` ignores the job's executor) by the resource `ResyncSlotResource`,
  required by `staged` and `mirror`. It serializes everything the queue cannot see
  (command-line runs started at the same instant, a queued run admitted while a command-line
  run starts) and dies with the process, so a killed run never holds it. It is a kernel lock
  (`flock`) on the config's store on one machine, and an advisory lock in the instance's
  PostgreSQL when `TOL_DAGSTER_PG_URL` is set (`resync.shared_lease`), across machines.

Under the lease, each run stages under its own key (the run id) and publishes only that state,
and `sync.config_lock` still guards every write to the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import dagster as dg
import sqlalchemy.exc
from dagster._core.storage.event_log.base import EventLogStorage

from tol_dagster import progress
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.resync.shared_lease import pg_lease
from tol_dagster.store.layout import Layout

Log = Callable[[str], None]

POOL_PREFIX = "tol_resync_"
#: Assets whose runs hold the config's pool and lease: the ones that write the mirror's store.
WRITING_ASSETS = ("fetched", "staged", "mirror")


def resync_pool(config: str) -> str:
    """The Dagster pool of `config`'s resyncs."""
    return f"{POOL_PREFIX}{safe_name(config)}"


def ensure_resync_pools(instance: dg.DagsterInstance, configs: Iterable[str]) -> None:
    """Give each config's pool its limit of 1 on the instance, before any run is queued.

    dagster.yaml's `default_limit` alone is applied only once the queue has seen a run in the
    pool, after it read the limits of that pass: runs queued before that pass all go.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    for config in configs:
        pool = resync_pool(config)
        if limits.get(pool) != 1:
            _set_limit_of_one(storage, pool)


def _set_limit_of_one(storage: EventLogStorage, pool: str) -> None:
    """Dagster's `set_concurrency_slots` inserts a new pool's row after reading that it is
    missing: processes setting it at the same instant (two `tol-dagster sync` started together
    on PostgreSQL) all insert, and all but one fail on its unique key. Those find the row the
    winner committed and set it again: an update under its row lock, adding no slot."""
    try:
        storage.set_concurrency_slots(pool, 1)
    except sqlalchemy.exc.IntegrityError:
        storage.set_concurrency_slots(pool, 1)


def _lock_path(layout: Layout, config: str) -> Path:
    # Not the store's `.lock` (sync.config_lock): this lease is held while that one is taken
    # and released inside the run's steps, and flock does not nest within a process.
    return layout.store_dir(config) / ".resync.lock"


def _holder_path(layout: Layout, config: str) -> Path:
    return layout.store_dir(config) / ".resync.holder"


def lease_holder(layout: Layout, config: str) -> dict[str, object] | None:
    """Who holds (or last held) `config`'s lease: run id, pid, host, since (informative only)."""
    path = _holder_path(layout, config)
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def resync_lease(
    layout: Layout, config: str, run_id: str, log: Log, pg_url: str | None = None
) -> Iterator[None]:
    """Hold `config`'s resync lease for the block; wait (saying for whom) while another has it.

    With `pg_url` (the instance's PostgreSQL) the lease is an advisory lock there, held across
    machines (`resync.shared_lease`); else a kernel lock on the config's store, for one machine.
    """

    def waiting(whom: str) -> None:
        progress.told(log)(f"waiting for resync {whom} of {config} to finish…")

    lock = (
        pg_lease(pg_url, config, f"run {run_id}", waiting)
        if pg_url
        else _file_lease(layout, config, waiting)
    )
    with lock:
        holder = _holder_path(layout, config)
        holder.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
        }
        holder.write_text(json.dumps(document))
        yield


@contextlib.contextmanager
def _file_lease(layout: Layout, config: str, waiting: Callable[[str], None]) -> Iterator[None]:
    path = _lock_path(layout, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lease_holder(layout, config) or {}
            waiting(
                f"run {holder.get('run_id', '?')} "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_leases(
    home: Path, configs: Sequence[str], run: dg.DagsterRun, pg_url: str | None, log: Log
) -> Iterator[None]:
    """Hold the lease of every config `run` resyncs (`configs_of_run`), in one order."""
    with contextlib.ExitStack() as leases:
        for config in configs_of_run(run, configs):
            leases.enter_context(resync_lease(Layout(home), config, run.run_id, log, pg_url))
        yield


def configs_of_run(run: dg.DagsterRun, configs: Sequence[str]) -> list[str]:
    """The configs whose store `run` writes, sorted so that runs holding several leases take
    them in one order: those of its `fetched`/`staged`/`mirror` steps (a job subset executed
    in process names its steps, with an empty asset selection; `fetched`'s are its graph's,
    `<graph>.<op>`), else of its selected assets (a queued
    run), else every configured one (the whole job)."""
    if run.step_keys_to_execute:
        writers = {
            asset_key(config, name).to_python_identifier(): config
            for config in configs
            for name in WRITING_ASSETS
        }
        nodes = {step.split(".")[0] for step in run.step_keys_to_execute}
        return sorted({writers[node] for node in nodes if node in writers})
    if run.asset_selection:
        found = {
            key.path[1]
            for key in run.asset_selection
            if len(key.path) == 3 and key.path[0] == "tol" and key.path[2] in WRITING_ASSETS
        }
        return sorted(found & set(configs))
    return sorted(configs)


#: Set on a run whose executor holds its leases (`defs.executors`): its steps, wherever they
#: run, then take none themselves.
LEASED_TAG = "tol/resync_lease"


def leased_by_executor(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True when `run_id`'s orchestrating process holds its leases (read from the instance: a
    step in another process or machine cannot see that process)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and LEASED_TAG in run.tags


class ResyncSlotResource(dg.ConfigurableResource):
    """The lease of every config a run resyncs, held from the run's start to its end, for a run
    whose executor does not hold it: `execute_in_process` (tests, `dg.materialize`) ignores
    the job's executor. Initialized once per such run, in its one process."""

    home: str
    configs: list[str]
    #: The instance's PostgreSQL (`TOL_DAGSTER_PG_URL`): the lease lives there, across machines.
    pg_url: str | None = None

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[ResyncSlotResource]:
        run = context.run
        if run is None or (  # outside a run (a sensor's context), or the executor holds them
            context.instance is not None and leased_by_executor(context.instance, run.run_id)
        ):
            yield self
            return
        log = context.log.info if context.log is not None else print
        with run_leases(Path(self.home), self.configs, run, self.pg_url, log):
            yield self

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
- **The lease**, a kernel lock (`flock`) per config held by the run's process from before its
  first step to after its last: the resource `ResyncSlotResource`, required by `staged` and
  `mirror`. It serializes everything the queue cannot see (command-line runs started at the same
  instant, a queued run admitted while a command-line run starts) and dies with the process, so
  a killed run never holds it.

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

from tol_dagster import progress
from tol_dagster.defs.keys import asset_key, safe_name
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
def resync_lease(layout: Layout, config: str, run_id: str, log: Log) -> Iterator[None]:
    """Hold `config`'s resync lease for the block; wait (saying for whom) while another has it."""
    path = _lock_path(layout, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lease_holder(layout, config) or {}
            progress.told(log)(
                f"waiting for resync run {holder.get('run_id', '?')} of {config} "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}) to finish…"
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            document = {
                "run_id": run_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.time(),
            }
            _holder_path(layout, config).write_text(json.dumps(document))
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


class ResyncSlotResource(dg.ConfigurableResource):
    """The lease of every config a run resyncs, held from the run's start to its end.

    Initialized once per run by the in-process executor every job here uses (the definitions'
    default executor too, so the UI's asset job holds it across `staged` and `mirror`).
    """

    home: str
    configs: list[str]

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[ResyncSlotResource]:
        run = context.run
        if run is None:  # built outside a run (a sensor's context): nothing to serialize
            yield self
            return
        log = context.log.info if context.log is not None else print
        with contextlib.ExitStack() as leases:
            for config in configs_of_run(run, self.configs):
                leases.enter_context(resync_lease(Layout(Path(self.home)), config, run.run_id, log))
            yield self

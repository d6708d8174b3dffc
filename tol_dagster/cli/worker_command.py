"""`tol-dagster worker`: a Celery worker serving the code location's steps.

What `dagster-celery worker start` does, without its pitfalls: the app is ours
(`defs.celery_app`: late acknowledgement, prefetch 1, the queue bound as dagster-celery sends),
and it runs in this process, so no `celery` executable has to be on `PATH`. The broker must
answer first (else exit 3, naming it), and the instance opens once under a lock (its tables
made once). Steps run in processes forked from this one and load the code location from this
environment: `TOL_HOME` (a shared file system) and the instance (`TOL_DAGSTER_PG_URL`, or
`DAGSTER_HOME` on a shared disk) must be those of the runs.
"""

from __future__ import annotations

import os
import socket
import sys

from tol_dagster.cli import verbosity
from tol_dagster.cluster_settings import CELERY, ClusterSettings
from tol_dagster.defs.celery_app import check_broker, worker_app
from tol_dagster.defs.instance import open_instance
from tol_dagster.errors import SettingsError
from tol_dagster.settings import Settings


def run_worker(*, concurrency: int | None) -> int:
    """Serve steps until stopped (Celery's own exit ends the process with its code)."""
    settings = Settings.from_env()
    cluster = ClusterSettings.from_env({**os.environ, "TOL_EXECUTOR": CELERY})
    if concurrency is not None and not 1 <= concurrency <= 256:
        raise SettingsError(f"--concurrency {concurrency} is out of range; expected 1..256")
    assert cluster.celery_broker is not None
    check_broker(cluster.celery_broker)
    # The instance opened once under our lock: workers started together on a new SQLite
    # DAGSTER_HOME would race to create its tables; a PostgreSQL that is down is said now.
    open_instance(settings).dispose()
    name = f"tol-{os.getpid()}@{socket.gethostname()}"
    print(
        f"worker {name}: serving queue {cluster.celery_queue} on "
        f"{cluster.shown()['TOL_CELERY_BROKER']} for {settings.home}",
        file=sys.stderr,
    )
    argv = [
        "worker",
        f"--queues={cluster.celery_queue}",
        f"--concurrency={concurrency or cluster.workers}",
        f"--hostname={name}",
        f"--loglevel={'DEBUG' if verbosity.verbose() else 'INFO'}",
        "--without-gossip",
        "--without-mingle",
    ]
    worker_app(cluster).worker_main(argv)
    return 0

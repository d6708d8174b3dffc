"""The Dagster instance: runs, event logs, schedules and sensor state, and where they live.

`DAGSTER_HOME` defaults to `<TOL_HOME>/dagster`, resolved to an absolute path once, so the
command line, `make dev` and runs launched by the daemon from another directory share it.
There they live in SQLite, unless `TOL_DAGSTER_PG_URL` names a PostgreSQL database: then the
webserver, the daemon, command-line runs and Celery workers on any machine share that one
(dagster-postgres). The yaml names the variable, never its value: no password on disk.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import dagster as dg
import yaml

from tol_dagster.cluster_settings import CLUSTER_EXTRA, PG_URL_VAR, ClusterSettings, require_extra
from tol_dagster.errors import SettingsError
from tol_dagster.resync.shared_lease import connect
from tol_dagster.settings import Settings
from tol_dagster.store.durable import file_lock, write_atomic

#: The project's instance settings (queue limits, run retries, run monitoring), shipped inside
#: the package so a non-editable install keeps them; the repo's top holds an identical copy
#: for people who run `dagster dev` by hand.
INSTANCE_YAML = resources.files("tol_dagster").joinpath("dagster.yaml")

#: What PostgreSQL storage adds: runs, event logs and schedules (sensor state) in the database
#: `TOL_DAGSTER_PG_URL` names, read from each process's environment when it opens the instance.
POSTGRES_STORAGE = f"""
# TOL_DAGSTER_PG_URL is set: runs, event logs, schedules and sensor state live in PostgreSQL,
# shared by the webserver, the daemon, command-line runs and every worker.
storage:
  postgres:
    postgres_url:
      env: {PG_URL_VAR}
"""


def render_instance_yaml(cluster: ClusterSettings) -> str:
    """The dagster.yaml of `cluster`'s mode: the packaged one, plus PostgreSQL storage if set."""
    if cluster.pg_url is not None:
        require_extra("dagster_postgres", CLUSTER_EXTRA)
    return _instance_yaml(postgres=cluster.pg_url is not None)


def _instance_yaml(*, postgres: bool) -> str:
    return INSTANCE_YAML.read_text() + (POSTGRES_STORAGE if postgres else "")


def ensure_dagster_home(settings: Settings) -> Path:
    """Set `DAGSTER_HOME` (unless the user did) and give it the dagster.yaml of the settings'
    mode: written when missing, rewritten when it is ours for the other mode (SQLite vs
    PostgreSQL); a dagster.yaml the user wrote is left as it is."""
    home = (
        Path(os.environ.get("DAGSTER_HOME") or settings.layout.dagster_home())
        .expanduser()
        .resolve()
    )
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    wanted = render_instance_yaml(settings.cluster)
    target = home / "dagster.yaml"
    with file_lock(home / ".tol-yaml.lock"):
        current = target.read_text() if target.exists() else None
        ours = (_instance_yaml(postgres=False), _instance_yaml(postgres=True))
        if current != wanted and (current is None or current in ours):
            install_instance_yaml(target, wanted)
    return home


def install_instance_yaml(target: Path, text: str) -> None:
    """Write `text` to `target`, whole or not at all: the daemon may read it."""
    write_atomic(target, text.encode())


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent instance the UI and the daemon read.

    Opened under a lock: the first opening creates the SQLite tables, and syncs started at the
    same instant on a new DAGSTER_HOME would otherwise race to create them ("table runs
    already exists").
    """
    home = ensure_dagster_home(settings)
    if settings.cluster.pg_url is not None:  # say so at once, not after Dagster's retries
        connect(settings.cluster.pg_url, "tol-dagster", "Dagster's runs and events").close()
    with file_lock(home / ".tol-open.lock"):
        try:
            return dg.DagsterInstance.get()
        except (yaml.YAMLError, dg.DagsterInvalidConfigError) as error:
            raise SettingsError(
                f"{home / 'dagster.yaml'} is not a Dagster instance configuration "
                f"({_why(error)}): mend it, or delete it and tol-dagster writes its own"
            ) from error


def _why(error: Exception) -> str:
    """What is wrong with the instance's yaml, in a line: each config error without the schema
    Dagster appends to it (a few thousand characters)."""
    if isinstance(error, dg.DagsterInvalidConfigError):
        return "; ".join(message.split(" Expected: ")[0] for message in error.error_messages)
    return " ".join(str(error).split())

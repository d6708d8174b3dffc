"""The Dagster instance: runs, event logs and schedules live under the data home.

`DAGSTER_HOME` defaults to `<TOL_HOME>/dagster`, resolved to an absolute path once, so the
command line, `make dev` and runs launched by the daemon from another directory share it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import dagster as dg

from tol_dagster.settings import Settings
from tol_dagster.store.durable import file_lock, write_atomic

#: The project's instance settings (queue limits, run retries, run monitoring), shipped inside
#: the package so a non-editable install keeps them; the repo's top holds an identical copy
#: for people who run `dagster dev` by hand.
INSTANCE_YAML = resources.files("tol_dagster").joinpath("dagster.yaml")


def ensure_dagster_home(settings: Settings) -> Path:
    """Set `DAGSTER_HOME` (unless the user did) and give it the project's dagster.yaml."""
    home = (
        Path(os.environ.get("DAGSTER_HOME") or settings.layout.dagster_home())
        .expanduser()
        .resolve()
    )
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists():
        install_instance_yaml(target)
    return home


def install_instance_yaml(target: Path) -> None:
    """Write the packaged dagster.yaml to `target` (whole or not at all: the daemon may read it)."""
    write_atomic(target, INSTANCE_YAML.read_bytes())


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent instance the UI and the daemon read.

    Opened under a lock: the first opening creates the SQLite tables, and syncs started at the
    same instant on a new DAGSTER_HOME would otherwise race to create them ("table runs
    already exists").
    """
    home = ensure_dagster_home(settings)
    with file_lock(home / ".tol-open.lock"):
        return dg.DagsterInstance.get()

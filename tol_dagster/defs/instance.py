"""The Dagster instance: runs, event logs, schedules and sensor state, and where they live.

`DAGSTER_HOME` defaults to `<TOL_HOME>/dagster`, resolved to an absolute path once, so the
command line, `make dev` and runs launched by the daemon from another directory share it.
There they live in SQLite, unless `TOL_DAGSTER_PG_URL` names a PostgreSQL database: then the
webserver, the daemon, command-line runs and Celery workers on any machine share that one
(dagster-postgres). The yaml names the variable, never its value: no password on disk.
"""

from __future__ import annotations

import hashlib
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


#: The last line of every dagster.yaml we write, with the sha256 of the text above it: a file
#: that still ends with it over that very text is ours to replace when our settings change
#: (the queue limits of an upgrade reach homes made before it); an edited one is the user's.
_STAMP = (
    "# Written by tol-dagster, which replaces it when its settings change unless it is edited: "
)

#: The sha256 of every dagster.yaml an earlier version wrote without the stamp (each version
#: of the packaged file, alone and with POSTGRES_STORAGE): also ours to replace.
_EARLIER_UNSTAMPED = frozenset(
    {
        "106738d10f9c3989f335b16c567eca6216e9c1341643d2dfc23af7f782014d6a",
        "10ed53253036cad8b7d43224d5f5a4f77e1072827f82606e1a62428d9966a371",
        "2ac3e3554cc6a4eebcd90f4d4b49c469ce04cf8f2328fcefb87925b46d0be364",
        "4b3b1d721d74719d495d45d4bfba25d17d6498087c5992f2dcffae0dcf5633f2",
        "5343486d03503c411107e84e3dfe32afe332494c8d552d2572c0a2d2756c9024",
        "9e169f6b037bfad88567a2f9e98cb87311a9975099f76b67731ffc9b8f335095",
        "a32b586aaef9f4971cf21e6d1c1d31eb7884a133c4394182c30f663b496ded04",
        "bc54787ecb8f892ace6b95d8062ac3adc7b3be840f471bb068d099165a3a8fff",
        "ce72ed7e0492603fed4392b4f541498dada4d4a3b74fff531852974201a00ccf",
        "ec2ce7f1091192b545ba81fdc53ce894dd4d5475206de28e37b7c8c6d6e2bb77",
        "f64b13ca70a4659a18b2b8f14743cbf80912017b0b9e2f9b070dc7b7ae8875e4",
        "fbaf7e353a692cc558130f92aec878375d1dfadbff07a9833b49a6279ed2ad1b",
    }
)


def _instance_yaml(*, postgres: bool) -> str:
    text = INSTANCE_YAML.read_text() + (POSTGRES_STORAGE if postgres else "")
    return f"{text}{_STAMP}{_sha256(text)}\n"


def _ours_unedited(text: str) -> bool:
    """Whether `text` is a dagster.yaml a version of tol-dagster wrote, unedited since."""
    body, stamp, digest = text.rpartition(_STAMP)
    if stamp:
        return digest == f"{_sha256(body)}\n"
    return _sha256(text) in _EARLIER_UNSTAMPED


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_dagster_home(settings: Settings) -> Path:
    """Set `DAGSTER_HOME` (unless the user did) and give it the dagster.yaml of the settings'
    mode: written when missing, rewritten when it is ours for the other mode (SQLite vs
    PostgreSQL) or of an earlier version, unedited; a dagster.yaml the user wrote or edited is
    left as it is."""
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
        if current != wanted and (current is None or _ours_unedited(current)):
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

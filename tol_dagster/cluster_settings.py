"""Settings for running beyond one process: the instance's database, the executor, the broker.

All optional: unset, tol-dagster runs as it always did (SQLite under `DAGSTER_HOME`, every step
in one process). The database and broker URLs may carry a password: `shown()` masks it, and it
is only ever read from the environment (the instance yaml names the variable, not its value).
The integrations live in the `cluster` and `k8s` extras; `require_extra` says which to install.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import urlsplit

from tol_dagster.errors import SettingsError

PG_URL_VAR = "TOL_DAGSTER_PG_URL"
EXECUTOR_VAR = "TOL_EXECUTOR"
WORKERS_VAR = "TOL_WORKERS"
BROKER_VAR = "TOL_CELERY_BROKER"
BACKEND_VAR = "TOL_CELERY_BACKEND"
QUEUE_VAR = "TOL_CELERY_QUEUE"

IN_PROCESS, MULTIPROCESS, CELERY, K8S = "in_process", "multiprocess", "celery", "k8s"
EXECUTORS = (IN_PROCESS, MULTIPROCESS, CELERY, K8S)

#: RabbitMQ on this machine with its default account, as Celery itself defaults to.
DEFAULT_BROKER = "amqp://guest@127.0.0.1:5672//"
#: Results travel back over the broker's own connection: nothing more to run.
DEFAULT_BACKEND = "rpc://"
#: dagster-celery's own queue: workers started by `dagster-celery worker start` serve it too.
DEFAULT_QUEUE = "dagster"

CLUSTER_EXTRA = "pip install 'tol-dagster[cluster]'"
K8S_EXTRA = "pip install 'tol-dagster[k8s]'"

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
_BROKER_SCHEMES = ("amqp", "pyamqp", "redis", "rediss")
_BACKEND_SCHEMES = ("rpc", "redis", "rediss", "db+postgresql", "db+sqlite")
_DB_NAME = re.compile(r"^/[A-Za-z0-9_][A-Za-z0-9_$-]*$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class ClusterSettings:
    """Where Dagster keeps its runs and how a run's steps are executed."""

    pg_url: str | None = None
    executor: str = IN_PROCESS
    workers: int = 1
    celery_broker: str | None = None
    celery_backend: str | None = None
    #: The queue the run's steps are sent to and `tol-dagster worker` serves: one per code
    #: location (or per test) sharing a broker.
    celery_queue: str = DEFAULT_QUEUE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClusterSettings:
        """Read and validate the cluster variables of `env` (default `os.environ`)."""
        env = os.environ if env is None else env
        executor = parse_executor(env.get(EXECUTOR_VAR))
        celery = executor == CELERY
        return cls(
            pg_url=parse_pg_url(env.get(PG_URL_VAR)),
            executor=executor,
            workers=parse_workers(env.get(WORKERS_VAR)),
            celery_broker=parse_url(
                BROKER_VAR, env.get(BROKER_VAR), DEFAULT_BROKER if celery else None, _BROKER_SCHEMES
            ),
            celery_backend=parse_url(
                BACKEND_VAR,
                env.get(BACKEND_VAR),
                DEFAULT_BACKEND if celery else None,
                _BACKEND_SCHEMES,
            ),
            celery_queue=parse_queue(env.get(QUEUE_VAR)),
        )

    @property
    def distributed(self) -> bool:
        """Steps may run in other processes than the run's (so outside `execute_in_process`)."""
        return self.executor != IN_PROCESS

    def shown(self) -> dict[str, object]:
        """The settings as logs and metadata may show them: passwords masked."""
        return {
            "storage": "postgres" if self.pg_url else "sqlite",
            PG_URL_VAR: mask(self.pg_url),
            EXECUTOR_VAR: self.executor,
            WORKERS_VAR: self.workers,
            BROKER_VAR: mask(self.celery_broker),
            BACKEND_VAR: mask(self.celery_backend),
            QUEUE_VAR: self.celery_queue,
        }


def parse_executor(value: str | None) -> str:
    name = (value or IN_PROCESS).strip().lower()
    if name not in EXECUTORS:
        raise SettingsError(
            f"{EXECUTOR_VAR}={value!r} is not an executor; expected one of {', '.join(EXECUTORS)}"
        )
    return name


def parse_queue(value: str | None) -> str:
    name = (value or DEFAULT_QUEUE).strip()
    if not _QUEUE.match(name):
        raise SettingsError(
            f"{QUEUE_VAR}={value!r} is not a queue name; expected letters, digits, '.', '_', '-'"
        )
    return name


def parse_workers(value: str | None) -> int:
    """How many steps run at once (multiprocess, k8s): default one per CPU."""
    return parse_int(WORKERS_VAR, value, os.cpu_count() or 1, 1, 256)


def parse_int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    """The whole number `name` holds, in `low..high`, or `default` when unset (every whole-number
    setting's parser: here, because `settings` builds on this module)."""
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} is not a whole number; expected {low}..{high}"
        ) from None
    if not low <= number <= high:
        raise SettingsError(f"{name}={value!r} is out of range; expected {low}..{high}")
    return number


def parse_pg_url(value: str | None) -> str | None:
    """`postgresql://user[:password]@host[:port]/db`, or None (SQLite) when unset or empty."""
    if value is None or value.strip() == "":
        return None
    url = value.strip()
    hint = (
        "expected postgresql://user@host:port/db, e.g. postgresql://dagster@127.0.0.1:5432/dagster"
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise SettingsError(f"{PG_URL_VAR}={mask(url)!r} is not a URL; {hint}") from None
    if parts.scheme not in _PG_SCHEMES or not parts.hostname or not parts.username:
        raise SettingsError(f"{PG_URL_VAR}={mask(url)!r} names no PostgreSQL user and host; {hint}")
    if not _DB_NAME.match(parts.path):
        raise SettingsError(f"{PG_URL_VAR}={mask(url)!r} names no database; {hint}")
    return url


def parse_url(
    name: str, value: str | None, default: str | None, schemes: tuple[str, ...]
) -> str | None:
    """A broker or result backend URL whose scheme Celery knows, else `default`."""
    if value is None or value.strip() == "":
        return default
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in schemes:
        raise SettingsError(
            f"{name}={mask(url)!r} is not a URL Celery can use; expected one starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    return url


def mask(url: str | None) -> str | None:
    """`url` with its password (if any) replaced by `***`, for logs, metadata and errors: all
    between the first `:` after `//` (or the start) and the last `@`, so that a password
    holding `/`, `#` or `?` (where a URL parser ends the host part, and finds no password) is
    masked too."""
    if not url:
        return url
    scheme, slashes, rest = url.partition("://")
    if not slashes:  # no scheme: `user:password@host` alone
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{slashes}{user}:***@{host}" if at and colon else url


def require_extra(module: str, install_hint: str = CLUSTER_EXTRA) -> ModuleType:
    """Import `module` from an extra, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SettingsError(
            f"{module} is not installed ({exc}); it comes with the extra: {install_hint}, "
            f"or unset {EXECUTOR_VAR} / {PG_URL_VAR} to run in one process on SQLite"
        ) from None

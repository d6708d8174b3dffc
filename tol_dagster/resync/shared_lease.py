"""One resync per config across machines: a PostgreSQL advisory lock in the instance's database.

A kernel lock (`flock`) serializes the processes of one machine; runs orchestrated on several
machines share only the instance's database (`TOL_DAGSTER_PG_URL`). The lease is a session-level
advisory lock on a key derived from the config's name, held on a connection kept open for the
whole run: PostgreSQL drops it when that session ends, so a killed process (TCP keepalives
detect a dead machine) never holds it. The session's `application_name` names the holder, so a
run that waits can say for whom. Advisory locks belong to their database: instances in other
databases of the same server never wait for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from tol_dagster.cluster_settings import CLUSTER_EXTRA, mask, require_extra
from tol_dagster.errors import ServiceUnreachable, SettingsError

#: The lock keys' namespace: the high 32 bits of every key say "tol-dagster resync".
_NAMESPACE = int.from_bytes(hashlib.sha256(b"tol-dagster resync").digest()[:4], "big") >> 1
#: A dead peer's session ends within about a minute: idle 30 s, then 3 probes 10 s apart.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}


def lock_keys(config: str) -> tuple[int, int]:
    """The advisory lock's two int4 keys for `config`: our namespace, then the name's hash."""
    digest = int.from_bytes(hashlib.sha256(config.encode()).digest()[:4], "big", signed=True)
    return _NAMESPACE, digest


@contextlib.contextmanager
def pg_lease(url: str, config: str, holder: str, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold `config`'s lease in the database at `url` for the block; `waiting(whom)` is told
    once if another session holds it, then this waits for it. `holder` names this run
    ("run <run id>")."""
    connection = connect(url, f"tol-dagster {holder}", "the resync lease")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_keys(config))
            if not cursor.fetchone()[0]:
                waiting(_holder(cursor, config))
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", lock_keys(config))
        yield
    finally:
        connection.close()  # ends the session: PostgreSQL releases the lock with it


def connect(url: str, application: str, purpose: str) -> Any:
    """A session on the instance's database (`TOL_DAGSTER_PG_URL`), named `application`;
    unreachable: `ServiceUnreachable` (exit 3) naming it, its password masked, and `purpose`."""
    psycopg2 = require_extra("psycopg2", CLUSTER_EXTRA)
    dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)  # SQLAlchemy's, for Dagster
    try:
        connection = psycopg2.connect(
            dsn, application_name=application[:63], connect_timeout=10, **_KEEPALIVES
        )  # PostgreSQL keeps 63 bytes of a name
    except psycopg2.OperationalError as exc:
        raise ServiceUnreachable(
            f"the instance's PostgreSQL at {mask(url)} is not reachable for {purpose} "
            f"({' '.join(str(exc).split())}); start it or fix TOL_DAGSTER_PG_URL"
        ) from None
    except psycopg2.Error as exc:  # its words quote the URL whole, password included
        raise SettingsError(
            f"TOL_DAGSTER_PG_URL={mask(url)!r} is refused by PostgreSQL's client "
            f"({type(exc).__name__}); expected postgresql://user@host:port/db"
        ) from None
    connection.autocommit = True  # a session lock, not a transaction's
    return connection


def _holder(cursor: Any, config: str) -> str:
    """Who holds `config`'s lock: the holding session's application name and client address."""
    high, low = lock_keys(config)
    cursor.execute(
        "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = CAST(%s AS int)::oid AND l.objid = CAST(%s AS int)::oid AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (high, low),
    )
    row = cursor.fetchone()
    if row is None:
        return "another session (gone since)"
    name, address, pid = row
    where = f"from {address}" if address else "over a local socket"
    return f"{str(name).removeprefix('tol-dagster ')} (PostgreSQL session {pid} {where})"

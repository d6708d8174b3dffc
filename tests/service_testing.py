"""The real services tests use (PostgreSQL, RabbitMQ, Redis on 127.0.0.1): each test gets its own
database, Celery queue or Redis db, so tests running at once never see each other's state."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2
from requirements import require_port

#: Trust auth on this project's machines; `test` is the database every machine has.
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_PORT = 6379


def require_postgres() -> None:
    require_port("PostgreSQL", 5432)


def require_rabbitmq() -> None:
    require_port("RabbitMQ", 5672)


def require_redis() -> None:
    require_port("Redis", REDIS_PORT)


def _admin(statement: str) -> None:
    connection = psycopg2.connect(PG_ADMIN_URL)
    connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (its URL), dropped after it."""
    require_postgres()
    name = f"tol_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def unique_queue() -> str:
    """A Celery queue no other test uses (RabbitMQ's vhost is shared)."""
    return f"tol-test-{uuid.uuid4().hex[:12]}"

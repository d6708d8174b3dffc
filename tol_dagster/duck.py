"""One in-memory DuckDB per process, handed out as cursors.

Opening a DuckDB database costs ~40 ms here, a cursor on an open one nothing; the small
incremental builds run many short queries, so they share the database. A cursor is a connection
of its own: give each thread (and each `with` block) its own.
"""

from __future__ import annotations

import os
import threading

import duckdb

_LOCK = threading.Lock()
_DATABASES: dict[int, duckdb.DuckDBPyConnection] = {}


def cursor() -> duckdb.DuckDBPyConnection:
    """A new cursor on this process's database (a forked child opens its own)."""
    pid = os.getpid()
    with _LOCK:
        if pid not in _DATABASES:
            _DATABASES[pid] = duckdb.connect()
        return _DATABASES[pid].cursor()

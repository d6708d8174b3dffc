"""Skip a test whose service, browser or tool is missing, naming it; fail instead in CI.

`.ci/run` sets `TOL_REQUIRE_SERVICES=1` (services, privileges, tools) and `TOL_REQUIRE_BROWSER=1`
(Chromium and Playwright): there a missing requirement is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

SERVICES_FLAG = "TOL_REQUIRE_SERVICES"
BROWSER_FLAG = "TOL_REQUIRE_BROWSER"


def missing(reason: str, flag: str = SERVICES_FLAG) -> None:
    """Skip with `reason`, or fail with it when `flag` is set to 1."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} ({flag}=1)")
    pytest.skip(reason)


def require_port(name: str, port: int, host: str = "127.0.0.1") -> None:
    """`name` must answer on `host:port` (PostgreSQL 5432, RabbitMQ 5672, Redis 6379)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        missing(f"{name} is not reachable on {host}:{port} ({exc}): start it to run this test")


def require_tool(tool: str, hint: str) -> str:
    """The path of `tool` on PATH; `hint` says how to install it."""
    path = shutil.which(tool)
    if path is None:
        missing(f"`{tool}` is not installed: {hint}")
    return str(path)

"""Real processes for end-to-end tests: start them with their logs kept, wait for what they
do within one time budget, and stop them (their whole process groups) at the end; a failure
shows the tail of each one's log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The code location as the webserver's GraphQL names it.
LOCATION = {"repositoryLocationName": "tol_dagster", "repositoryName": "__repository__"}

T = TypeVar("T")


@dataclass
class Stack:
    """The running processes and where their logs go; `fail` reports with the logs' tails."""

    logs: Path
    budget_s: float
    deadline: float = 0.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.budget_s

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (the child owns it)
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def stop(self) -> None:
        """SIGTERM each process group (the daemon first: it launches runs), SIGKILL what lingers."""
        first = [name for name in ("daemon", "webserver", "hub") if name in self.processes]
        for name in [*first, *(name for name in self.processes if name not in first)]:
            signal_group(self.processes[name], signal.SIGTERM)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            signal_group(process, signal.SIGKILL)  # run workers may outlive their parent
            process.wait(timeout=10)

    def tails(self, lines: int = 40) -> str:
        parts = []
        for name in self.processes:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.tails()}", pytrace=False)

    def wait_for(self, what: str, probe: Callable[[], T | None], interval_s: float = 0.5) -> T:
        """Poll `probe` until it returns something, a process dies or the budget runs out."""
        while True:
            value = probe()
            if value is not None:
                return value
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.fail(f"{name} exited with {process.returncode} while waiting for {what}")
            if time.monotonic() > self.deadline:
                self.fail(f"timed out after {self.budget_s:.0f} s in all waiting for {what}")
            time.sleep(interval_s)


def running(logs: Path, budget_s: float) -> Iterator[Stack]:
    """A stack whose logs go to `logs`, stopped whatever happens (a fixture's body)."""
    logs.mkdir()
    stack = Stack(logs, budget_s)
    try:
        yield stack
    finally:
        stack.stop()


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def endpoint_of(stack: Stack) -> str:
    log = stack.logs / "hub.log"

    def first_line() -> str | None:
        line = log.read_text().partition("\n")[0] if log.exists() else ""
        return line.removeprefix("endpoint=") if line.startswith("endpoint=") else None

    return stack.wait_for("the local Hub's endpoint line", first_line, interval_s=0.1)


LOCATION_STATUS = """
query($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError { __typename ... on PythonError { message } }
    }
  }
}"""


def location_loaded(stack: Stack, graphql: str) -> bool | None:
    """True once the code location loaded; fails the test with Dagster's message if it did not."""
    try:
        answer = http_json(
            graphql,
            {"query": LOCATION_STATUS, "variables": {"name": LOCATION["repositoryLocationName"]}},
        )
    except (urllib.error.URLError, ConnectionError):
        return None
    entry = (answer.get("data") or {}).get("workspaceLocationEntryOrError") or {}
    if entry.get("loadStatus") != "LOADED":
        return None
    error = entry.get("locationOrLoadError") or {}
    if error.get("__typename") == "PythonError":
        stack.fail(f"the code location failed to load: {error.get('message')}")
    return True

"""The terminal without the lines Dagster's step processes print there (unless `--verbose`).

Under `TOL_EXECUTOR=multiprocess` each step process announces itself ("Executing step … in
subprocess", DEBUG) through a console logger of its own, which the run config's logger levels
(`runner.console_logs`) do not reach, on the stderr it inherited. So, once per command, fd 2
becomes a pipe and a thread forwards what arrives to the terminal, less Dagster's log lines.
Once: Python's forkserver, which forks the step processes, keeps the stderr it started with for
the life of the command. At exit fd 2 is the terminal again and the pipe is drained.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading

#: Dagster's console format: "2026-12-04 08:33:50 +0000 - dagster - DEBUG - …".
DAGSTER_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - ")
_installed: list[_Forwarder] = []


class _Forwarder:
    def __init__(self) -> None:
        sys.stderr.flush()
        self.terminal = os.dup(2)
        self.read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="step-output", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self.read], [], [], 0.1)
            if not ready:
                if self.closing.is_set():
                    break
                continue
            chunk = os.read(self.read, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not DAGSTER_LINE.match(line)]
            if pending and not DAGSTER_LINE.match(pending):  # a bar's update: no newline
                kept.append(pending)
                pending = b""
            if kept:
                os.write(self.terminal, b"".join(kept))
        if pending:
            os.write(self.terminal, pending)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.terminal, 2)  # this process writes to the terminal again
        self.closing.set()
        self.thread.join(timeout=5)


def without_dagster_lines() -> None:
    """From now on until this command exits, Dagster's lines on stderr are dropped."""
    if not _installed:
        _installed.append(_Forwarder())
        atexit.register(_installed[0].close)

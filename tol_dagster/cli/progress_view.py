"""The progress a person sees: `tol_dagster.progress` events drawn on stderr.

On a terminal, one line redrawn in place: a bar, files, bytes, rows, rate and ETA of the task
running (downloads and per-file inspection of a sync, rows written by a slice), with notes and
the Hub client's warnings printed above it. Elsewhere (a log file, a pipe) or with `--verbose`
(Dagster's lines would tear the bar): plain lines, `[label] ...`, at most every few seconds.
`--quiet` and `--json` show nothing but errors. Counts come from the work itself, never a clock.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from tol_dagster import progress
from tol_dagster.cli import verbosity

#: How often the bar is redrawn, and a plain line written, at most.
BAR_EVERY_S = 0.1
PLAIN_EVERY_S = 5.0
BAR_WIDTH = 24
#: The loggers whose warnings (retries, resumed downloads) a person should read.
OUR_LOGGERS = "tol_dagster"


@dataclass
class _Counts:
    files: int = 0
    bytes: int = 0
    rows: int = 0


class ProgressView:
    """A `progress` listener drawing the current task on `stream` (a bar, or plain lines)."""

    def __init__(self, stream: TextIO, label: str, *, bar: bool) -> None:
        self.stream, self.label, self.bar = stream, label, bar
        self.lock = threading.Lock()
        self.task: str | None = None
        self.total = _Counts()
        self.done = _Counts()
        self.started = self.last = self.flowed = time.monotonic()
        self.drawn = False
        self.expected: dict[str, _Counts] = {}

    def expect(self, task: str, *, rows: int) -> None:
        """`task`'s total when its own start cannot know it (a slice's rows, counted before)."""
        with self.lock:
            self.expected[task] = _Counts(rows=rows)

    def __call__(self, event: progress.Event) -> None:
        with self.lock:
            if event.kind == "note":
                self._line(event.text)
            elif event.kind == "start":
                self.task = f"{event.task} {event.text}".strip()
                self.total = _Counts(event.files, event.bytes, event.rows)
                if self.total == _Counts():
                    self.total = self.expected.get(event.task, self.total)
                self.done = _Counts()
                self.started = self.flowed = time.monotonic()
                self._draw(force=self.bar)
            elif event.kind == "advance":
                self.done.files += event.files
                self.done.bytes += event.bytes
                self.done.rows += event.rows
                if event.bytes or event.rows:
                    self.flowed = time.monotonic()
                complete = _fraction(self.done, self.total) == 1.0
                self._draw(force=self.bar and (bool(event.files) or complete))

    def line(self, text: str) -> None:
        """`text` on its own line (above the bar on a terminal)."""
        with self.lock:
            self._line(text)

    def close(self) -> None:
        """Erase the bar: the report follows on a clean line."""
        with self.lock:
            self._erase()

    def _line(self, text: str) -> None:
        self._erase()
        self.stream.write((text if self.bar else f"[{self.label}] {text}") + "\n")
        if self.bar and self.task is not None:
            self._draw(force=True)
        self.stream.flush()

    def _erase(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.task is None or not (force or now - self.last >= self._every()):
            return
        self.last = now
        text = describe(self.task, self.done, self.total, self.flowed - self.started)
        if self.bar:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + f"{self.label} {text}"[:width] + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(f"[{self.label}] {text}\n")
        self.stream.flush()

    def _every(self) -> float:
        return BAR_EVERY_S if self.bar else PLAIN_EVERY_S


def describe(task: str, done: _Counts, total: _Counts, flowing: float) -> str:
    """`task: [####....] 2/4 files 87.3/174.7 MB 12.1 MB/s ETA 7 s`: what is known of it.
    `flowing`: seconds from the task's start to its last byte or row, what the rate is over."""
    parts = [f"{task}:"]
    fraction = _fraction(done, total)
    if fraction is not None:
        filled = round(BAR_WIDTH * min(fraction, 1.0))
        parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
    if total.files:
        parts.append(f"{done.files}/{total.files} files")
    if done.bytes or total.bytes:
        of = f"/{total.bytes / 1e6:,.1f}" if total.bytes else ""
        parts.append(f"{done.bytes / 1e6:,.1f}{of} MB")
    if done.rows or total.rows:
        of = f"/{total.rows:,}" if total.rows else ""
        parts.append(f"{done.rows:,}{of} rows")
    flowed, left = (
        (done.bytes, total.bytes - done.bytes)
        if done.bytes
        else (done.rows, total.rows - done.rows)
    )
    if flowed and flowing > 0:
        rate = flowed / flowing
        parts.append(f"{rate / 1e6:,.1f} MB/s" if done.bytes else f"{rate:,.0f} rows/s")
        if left > 0:
            parts.append(f"ETA {left / rate:,.0f} s")
    if fraction is None and not flowed:
        parts.append("…")
    elif total.files and done.files < total.files and total.bytes and done.bytes >= total.bytes:
        parts.append("inspecting…")
    return " ".join(parts)


def _fraction(done: _Counts, total: _Counts) -> float | None:
    """How much of the task is done (None: its size is unknown). A sync's files count as much
    as its bytes: each is inspected after its download."""
    parts = [d / t for d, t in ((done.bytes, total.bytes), (done.rows, total.rows)) if t]
    parts += [done.files / total.files] if total.files else []
    return sum(parts) / len(parts) if parts else None


class _LogLines(logging.Handler):
    """Our loggers' warnings (a retry, a resumed download) as lines of the view."""

    def __init__(self, view: ProgressView) -> None:
        super().__init__(logging.WARNING)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        self.view.line(record.getMessage())


@contextlib.contextmanager
def shown(label: str) -> Iterator[ProgressView | None]:
    """Within: the work's progress on stderr as this command's verbosity says (None: hidden)."""
    logger = logging.getLogger(OUR_LOGGERS)
    if not verbosity.chatty():
        handler: logging.Handler = logging.NullHandler()  # errors only: no retry chatter
        logger.addHandler(handler)
        try:
            yield None
        finally:
            logger.removeHandler(handler)
        return
    stream = sys.stderr
    view = ProgressView(stream, label, bar=stream.isatty() and not verbosity.verbose())
    handler = _LogLines(view)
    logger.addHandler(handler)
    try:
        with progress.listening(view):
            yield view
    finally:
        view.close()
        logger.removeHandler(handler)

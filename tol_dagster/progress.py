"""Progress of the real work, for whoever watches: the command line draws its bar from it.

The code that does the work reports here as it goes (a download's bytes as they stream, a file
inspected, a slice's rows written, a sentence worth showing); listeners attached in the same
process receive each `Event`. Nothing is attached in a Dagster run launched by the daemon, and
then a report costs one test of an empty list. Listeners are called in the reporting thread
(downloads run in several): they must be quick and thread-safe. The run log keeps its own lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: What a task is: "fetch" (a resync's downloads and per-file inspection), "slice" (rows written).
Task = str


@dataclass(frozen=True)
class Event:
    """One report. `start`: a task begins, counts are its totals (0: unknown), `text` what it
    works on; `advance`: counts are done since the last report; `note`: `text` is a sentence
    for a person."""

    kind: str
    task: Task = ""
    files: int = 0
    bytes: int = 0
    rows: int = 0
    text: str = ""


Listener = Callable[[Event], None]

_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Within: `listener` receives every event reported in this process."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def start(task: Task, *, files: int = 0, bytes: int = 0, rows: int = 0, what: str = "") -> None:
    """`task` begins (on `what`, e.g. a slice's key), with its totals where known."""
    if _listeners:
        _emit(Event("start", task, files, bytes, rows, what))


def advance(task: Task, *, files: int = 0, bytes: int = 0, rows: int = 0) -> None:
    """`task` did this much more."""
    if _listeners:
        _emit(Event("advance", task, files, bytes, rows))


def bytes_of(task: Task) -> Callable[[int], None]:
    """`advance(task, bytes=n)` as a callback of `n`: what a hash's `on_bytes` calls."""

    def advanced(count: int) -> None:
        advance(task, bytes=count)

    return advanced


def note(text: str) -> None:
    """A sentence a person watching should read (e.g. a re-plan); the run log has it too."""
    if _listeners:
        _emit(Event("note", text=text))


def told(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log`, each line also a `note`: for the few lines a person at a terminal must read."""

    def both(text: str) -> None:
        log(text)
        note(text)

    return both


def _emit(event: Event) -> None:
    for listener in list(_listeners):
        listener(event)

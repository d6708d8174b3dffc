"""SIGINT and SIGTERM end a command as "interrupted" (130/143), its Dagster run CANCELED.

SIGTERM is turned into the same exception as Ctrl-C in the main thread, so Dagster stops the
run's step as it does for Ctrl-C. While a run executes, Dagster installs its own handlers for
both signals and cannot tell them apart, so the signal number is taken from Python's wakeup
fd (written by the C-level handler for every caught signal): a watcher thread reads it, marks
the current run CANCELING at once (Dagster then ends it CANCELED, not failed) and remembers
which signal came, for the exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import dagster as dg

_WATCHED = (signal.SIGINT, signal.SIGTERM)
_active: list[SignalWatch] = []


class SignalWatch:
    """The signals received while active, and the run to cancel when one arrives."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._run: tuple[dg.DagsterInstance, str] | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Event()

    def wait(self, timeout: float) -> int | None:
        """The first signal received, waiting up to `timeout` s for the watcher to see it."""
        self._arrived.wait(timeout)
        return self.signum

    @property
    def signum(self) -> int | None:
        """The first SIGINT/SIGTERM received, if any."""
        return self.received[0] if self.received else None

    @contextlib.contextmanager
    def running(self, instance: dg.DagsterInstance, run_id: str) -> Iterator[None]:
        """While inside, a signal marks run `run_id` CANCELING."""
        with self._lock:
            self._run = (instance, run_id)
            pending = bool(self.received)
        if pending:
            self._cancel()
        try:
            yield
        finally:
            with self._lock:
                self._run = None

    def on_signal(self, signum: int) -> None:
        with self._lock:
            self.received.append(signum)
        self._arrived.set()
        self._cancel()

    def _cancel(self) -> None:
        with self._lock:
            current = self._run
        if current is None:
            return
        instance, run_id = current
        with contextlib.suppress(Exception):  # the run may not be stored yet, or be over
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished and run.status.value != "CANCELING":
                instance.report_run_canceling(run, message=f"{self._name()} received")

    def _name(self) -> str:
        return signal.Signals(self.received[-1]).name if self.received else "signal"


def current() -> SignalWatch:
    """The active watch (a fresh, inert one outside `watch_signals`)."""
    return _active[-1] if _active else SignalWatch()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def watch_signals() -> Iterator[SignalWatch]:
    """Within: SIGTERM acts as Ctrl-C and every SIGINT/SIGTERM is recorded (main thread only)."""
    watch = SignalWatch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def read() -> None:
        while chunk := os.read(read_fd, 64):
            for signum in chunk:
                if signum in _WATCHED:
                    watch.on_signal(signum)

    reader = threading.Thread(target=read, name="tol-signals", daemon=True)
    reader.start()
    _active.append(watch)
    try:
        yield watch
    finally:
        _active.remove(watch)
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous_term)
        os.close(write_fd)
        reader.join(timeout=5)
        os.close(read_fd)

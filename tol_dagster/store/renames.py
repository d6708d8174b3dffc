"""Finished temp files made durable and renamed into place by a background thread, in order,
and small files written whole by it (`write`).

Why: publishing a file atomically waits for its fsync (milliseconds of disk, ~6% of a rank
pass of small slices), and the next slice need not wait for it. The guarantee stays the
atomic write's: a file is renamed into place only once its bytes are on disk, and a reader
sees the old file or the new one. Callers that record what was published call `wait` first,
so no record ever names a file still in the queue.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path
from types import TracebackType

from tol_dagster.store.durable import fsync_file, write_atomic

#: Marks the end of the queue for the thread.
_STOP = None


class DeferredRenames:
    """`publish(temp, path)` (and `write(data, path)`) returns at once; a thread fsyncs `temp`
    and renames it onto `path`, in the order given. After a failure (a full disk, an I/O
    error) nothing more is renamed or written: the temp files still queued are removed and
    `wait` raises the first error."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Path | bytes, Path] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="durable-renames", daemon=True)
        self._thread.start()

    def publish(self, temp: Path, path: Path) -> None:
        """Queue `temp` (whole, closed) to replace `path`; raises the first earlier failure."""
        self._raise()
        self._queue.put((temp, path))

    def write(self, data: bytes, path: Path) -> None:
        """Queue `data` to replace `path`, written to a temp file, fsynced and renamed in turn
        by the thread (`durable.write_atomic`): small files (a rank pass's records) cost the
        caller no file creation, which waits on the journal while other files sync."""
        self._raise()
        self._queue.put((data, path))

    def wait(self) -> None:
        """Return once every queued file is in place; raise the first failure if one failed."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Publish what is queued, stop the thread, and raise the first failure if any."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise()

    def __enter__(self) -> DeferredRenames:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the caller's error is the one to see
            self.close()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            source, path = item
            try:
                if isinstance(source, bytes):
                    if self._error is None:
                        write_atomic(path, source, sync_dir=False)
                else:
                    self._rename(source, path)
            except BaseException as error:  # kept for the caller's thread
                self._error = error
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _rename(self, temp: Path, path: Path) -> None:
        """Put `temp` in place once its bytes are durable; removed if not put (a failure now
        or before)."""
        published = False
        try:
            if self._error is None:
                fsync_file(temp)
                os.replace(temp, path)
                published = True
        finally:
            if not published:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

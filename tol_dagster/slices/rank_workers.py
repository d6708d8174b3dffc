"""A rank pass's values spread over worker processes: the values cut into contiguous parts of
about equal work, each part published by its own process, in the mirror's order.

Why: a rank pass is CPU-bound on one thread (pages decoded and encoded, footers parsed and
written in Python, the checks), and the GIL keeps threads from sharing that work. Each part is
a run of neighbouring values, so each worker keeps reading the pages its last value read.
Workers are new Python processes (not forked from a process holding DuckDB's and Arrow's
threads), stop between values once their parent is gone, and hold one slice at a time each.
A worker reads its part one item at a time from its task file (a rank pass's items are chunks
of values): what it holds does not grow with its part (434,000 species each, at full scale).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Fewer values than this per worker are not worth a process (starting one costs ~0.5 s).
MIN_VALUES_PER_WORKER = 64
#: glibc's malloc arenas in a worker (unless MALLOC_ARENA_MAX is set): by default each thread
#: (prefetch, page decoding) gets one, and each keeps the page buffers freed in it; two hold a
#: worker's peak RSS to about half, at the same speed (measured on a rank of 1,018 families).
_ARENAS = os.environ.get("MALLOC_ARENA_MAX", "2")
#: Objects allocated between two collections of the youngest generation during a part (Python's
#: default is 700): a value's footers, Thrift structs and records are many short-lived objects,
#: and the default collected about twice a value, 1.3 of a worker's 37 CPU seconds.
YOUNG_OBJECTS = 10_000
#: A value's fixed cost in rows' worth of work (its footers, checks and publish), to balance
#: parts of many small values against parts of a few large ones.
ROWS_PER_VALUE = 2_000


def split(values: Sequence[T], weights: Sequence[int], workers: int) -> list[list[T]]:
    """`values` cut into at most `workers` contiguous parts of about equal weight (plus
    ROWS_PER_VALUE each), at least MIN_VALUES_PER_WORKER values a part."""
    parts = max(1, min(workers, len(values) // MIN_VALUES_PER_WORKER))
    if parts == 1:
        return [list(values)] if values else []
    total = sum(weights) + ROWS_PER_VALUE * len(values)
    cut, done, out = 1, 0, [[]]  # type: ignore[var-annotated]
    for value, weight in zip(values, weights, strict=True):
        if done >= total * cut / parts and cut < parts:
            out.append([])
            cut += 1
        out[-1].append(value)
        done += weight + ROWS_PER_VALUE
    return out


def run_parts(work: Callable[..., R], parts: Sequence[Sequence[T]], **arguments: Any) -> list[R]:
    """`work(items, **arguments)` for each part, `items` an iterable of the part's items: in
    this process for one part, else one worker process per part (this Python importing this
    module and calling `serve`: no main module imported again, unlike multiprocessing's spawn),
    which unpickles the items as `work` iterates. Results in the parts' order; the first part's
    error is raised once every part has stopped. Interrupted (or failing) here, the workers are
    interrupted too (SIGINT: each cleans up what it was writing) and waited for."""
    if len(parts) <= 1:
        with fewer_collections():
            return [work(part, **arguments) for part in parts]
    workers: list[tuple[subprocess.Popen, BinaryIO]] = []
    try:
        for part in parts:
            workers.append(_start((os.getpid(), work, arguments), part))
        outcomes = [_outcome(process, results) for process, results in workers]
    except BaseException:
        for _, results in workers:
            results.close()  # a worker sending its outcome now fails at once, never blocks
        _interrupt([process for process, _ in workers])
        raise
    finally:
        for _, results in workers:
            results.close()
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """The garbage collector run less often (YOUNG_OBJECTS), as it was again after."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], YOUNG_OBJECTS), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _start(task: tuple[Any, ...], items: Sequence[Any]) -> tuple[subprocess.Popen, BinaryIO]:
    """A worker reading `task`, then the number of `items` and each item, pickled one after
    the other in a file as its stdin (not a pipe: no worker waits for the one before it to
    read its task), answering on a pipe of its own (its stdout and stderr stay the caller's,
    for its logs)."""
    read, write = os.pipe()
    results = os.fdopen(read, "rb")
    package = str(Path(__file__).resolve().parents[2])  # where this tol_dagster is imported from
    path = os.pathsep.join(filter(None, [package, os.environ.get("PYTHONPATH")]))
    try:
        with tempfile.TemporaryFile() as stdin:
            pickle.dump((*task, len(items)), stdin)
            for item in items:
                pickle.dump(item, stdin)
            stdin.seek(0)
            process = subprocess.Popen(
                # Imported, not run as __main__: a second copy of this module would hold the
                # parent's pid where `parent_gone` never looks.
                [sys.executable, "-c", _SERVE.format(module=__name__, results=write)],
                stdin=stdin,
                pass_fds=(write,),
                env={**os.environ, "PYTHONPATH": path, "MALLOC_ARENA_MAX": _ARENAS},
            )
    except BaseException:
        results.close()
        raise
    finally:
        os.close(write)
    return process, results


def _outcome(process: subprocess.Popen, results: BinaryIO) -> tuple[bool, Any]:
    try:
        outcome = pickle.load(results)
    except EOFError:
        process.wait()
        raise RuntimeError(
            f"a worker of the rank pass (pid {process.pid}) ended without a result (exit code "
            f"{process.returncode}: killed, perhaps for memory); the slices it published are "
            "whole; run the pass again, with fewer workers (TOL_RANK_WORKERS) if memory is short"
        ) from None
    process.wait()
    return outcome


def _interrupt(processes: list[subprocess.Popen]) -> None:
    """SIGINT to each worker still running, then wait for it (killed after 30 s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: In a worker, its parent's pid.
_PARENT: list[int] = []


def parent_gone() -> bool:
    """In a worker: its parent (the pass) is gone, killed or interrupted; the worker should stop
    before its next value (its published slices are whole: each is published atomically)."""
    return bool(_PARENT) and os.getppid() != _PARENT[0]


def _items(count: int) -> Iterator[Any]:
    """A worker's items, each unpickled from stdin when asked for."""
    for _ in range(count):
        yield pickle.load(sys.stdin.buffer)


#: A worker's program: an interrupt before its work starts (while it loads) ends it quietly;
#: one during the work goes to the parent as its outcome (`serve`).
_SERVE = """
import sys
try:
    from {module} import serve
    serve({results})
except KeyboardInterrupt:
    sys.exit(130)
"""


def serve(results: int) -> None:
    """A worker: its task from stdin, its outcome (result, or the error) to fd `results`."""
    parent, work, arguments, count = pickle.load(sys.stdin.buffer)
    _PARENT.append(parent)
    try:
        with fewer_collections():
            outcome: tuple[bool, Any] = (True, work(_items(count), **arguments))
    except BaseException as error:  # sent to the parent, which raises it
        outcome = (False, error)
    try:
        data = pickle.dumps(outcome)
    except Exception as error:  # an error that does not pickle: its words then
        data = pickle.dumps((False, RuntimeError(f"{outcome[1]!r} ({error})")))
    with contextlib.suppress(BrokenPipeError), os.fdopen(results, "wb") as out:
        out.write(data)  # a parent that stopped listening (interrupted) closed the pipe

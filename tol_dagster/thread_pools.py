"""Threads kept from one use to the next, by purpose (`shared_pool`), and items produced by one
of them ahead of their consumer (`prefetched`).

Why: a rank pass reads thousands of slices, and starting a slice's reader and page threads
anew for each waited for the GIL held by the pass's other threads (~4% of a one-process pass of
3,510 families). A pool made in a parent is dropped in a forked child, where its threads do not
exist (a Celery worker forks), and made again there on first use.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

_POOLS: dict[str, ThreadPoolExecutor] = {}

T = TypeVar("T")


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """This process's pool of up to `workers` threads named `name`, made on first use. Its
    threads are shared by every use of that name at once in the process (the slices read at
    once); each waits for its own work, never for an idle thread's."""
    pool = _POOLS.get(name)
    if pool is None:
        pool = _POOLS.setdefault(name, ThreadPoolExecutor(workers, thread_name_prefix=name))
    return pool


os.register_at_fork(after_in_child=_POOLS.clear)


@dataclass(frozen=True)
class _Raised:
    """An error of the worker thread, handed to the consumer to raise in its own thread."""

    error: BaseException


_END = object()


def prefetched(items: Iterator[T], depth: int, pool: ThreadPoolExecutor) -> Generator[T]:
    """`items`, produced by a thread of `pool` up to `depth` ahead, so that producing them
    overlaps consuming them; the producer's error is raised in the consumer's thread, and
    closing the generator stops the producer before the close returns."""
    slots: queue.Queue[object] = queue.Queue(depth)
    cancelled = threading.Event()

    def put(item: object) -> bool:
        while not cancelled.is_set():
            with contextlib.suppress(queue.Full):
                slots.put(item, timeout=0.1)
                return True
        return False

    def work() -> None:
        try:
            if cancelled.is_set():
                return
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:
            put(_Raised(error))
        finally:  # release what `items` holds (threads, connections) now, in this thread
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = pool.submit(work)
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        worker.result()  # `work` raises nothing: its errors were handed over

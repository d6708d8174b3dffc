"""Threads kept from one slice to the next (`thread_pools`): a slice read after another
starts no thread, a forked child gets pools of its own, and a slice closed early stops its
reader before the close returns."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator

import pytest

from tol_dagster.slices.read import read_ahead
from tol_dagster.thread_pools import shared_pool


def _read(items: list[int]) -> list[int]:
    return list(read_ahead(iter(items), 2))


def test_a_slice_read_after_another_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read([1, 2, 3]) == [1, 2, 3]
    started = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    for _ in range(5):
        assert _read(list(range(10))) == list(range(10))
    assert started == []


def _in_child(results: multiprocessing.Queue) -> None:
    results.put((_read([4, 5]), shared_pool("slice-pages", 2).submit(sum, [1, 2]).result()))


def test_a_forked_child_reads_with_pools_of_its_own() -> None:
    """The parent's pools hold idle threads; a child forked from it has none of them."""
    _read([1])
    shared_pool("slice-pages", 2).submit(int).result()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_in_child, args=(results,))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child's read waited for threads that are not there"
    assert results.get(timeout=5) == ([4, 5], 3)


def test_a_slice_closed_early_has_stopped_reading_when_the_close_returns() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    reader = read_ahead(items(), 2)
    assert next(reader) == 0
    reader.close()
    assert closed.is_set()

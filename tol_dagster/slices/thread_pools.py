"""Threads kept from one slice to the next, by purpose.

Why: a rank pass reads thousands of slices, and starting a slice's reader and page threads
anew for each waited for the GIL held by the pass's other threads (~4% of a one-process pass of
3,510 families). A pool made in a parent is dropped in a forked child, where its threads do not
exist (a Celery worker forks), and made again there on first use.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[str, ThreadPoolExecutor] = {}


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """This process's pool of up to `workers` threads named `name`, made on first use. Its
    threads are shared by every slice read at once in the process; each waits for its own
    work, never for an idle thread's."""
    pool = _POOLS.get(name)
    if pool is None:
        pool = _POOLS.setdefault(name, ThreadPoolExecutor(workers, thread_name_prefix=name))
    return pool


os.register_at_fork(after_in_child=_POOLS.clear)

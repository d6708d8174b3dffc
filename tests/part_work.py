"""Work for `rank_workers.run_parts` in tests: importable by a worker process, whose
PYTHONPATH the test extends with this folder."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path


def sleep_through(items: Iterable[float]) -> None:
    """Sleep each item's seconds."""
    for seconds in items:
        time.sleep(seconds)


def peak_rss_after(items: Iterable[bytes]) -> tuple[int, int]:
    """The number of bytes of `items` (dropped as read) and this process's peak RSS after
    (VmHWM: `ru_maxrss` would keep the peak of the process it was forked from)."""
    total = sum(len(item) for item in items)
    status = Path("/proc/self/status").read_text().splitlines()
    return total, next(int(line.split()[1]) << 10 for line in status if line.startswith("VmHWM"))

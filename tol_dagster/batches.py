"""How per-file work is cut into Dagster steps: batches sized from the files and the executor.

A step has a fixed cost (a process, an event-log round trip, a pickle through the IO manager),
so a config of hundreds of files must not become hundreds of steps; and one step per executor
leaves the others idle. In one process there is nothing to spread: few batches, bounded only by
bytes (a batch is a checkpoint too). With N workers, a few batches per worker keep them busy
while sizes differ. `TOL_STEP_BATCH_FILES` overrides the choice with a fixed number of files.
Batches follow the files' order (by name), so the same files always make the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tol_dagster.cluster_settings import ClusterSettings

T = TypeVar("T")

#: Batches per worker when steps run in parallel: enough that a slow batch does not leave the
#: other workers idle, few enough that the steps' fixed cost stays small.
BATCHES_PER_WORKER = 3
#: The most bytes one batch holds (unless a single file is larger): what a killed step loses
#: at worst is resumed, but a batch is also the unit a worker holds.
MAX_BATCH_BYTES = 8 * 2**30
#: The most steps one stage fans out to, whatever the files' bytes.
MAX_BATCHES = 64


@dataclass(frozen=True)
class BatchPolicy:
    """How many steps may run at once (1: in process) and the override in files per batch."""

    parallelism: int = 1
    batch_files: int | None = None
    max_batch_bytes: int = MAX_BATCH_BYTES


def parallelism(cluster: ClusterSettings) -> int:
    """How many steps `cluster`'s executor runs at once: one in process, else `TOL_WORKERS`."""
    return cluster.workers if cluster.distributed else 1


def batch_count(sizes: Sequence[int], policy: BatchPolicy) -> int:
    """How many batches `sizes` (bytes per file) make under `policy`: at least one, at most
    one per file."""
    if not sizes:
        return 1
    if policy.batch_files is not None:
        return math.ceil(len(sizes) / policy.batch_files)
    wanted = 1 if policy.parallelism <= 1 else policy.parallelism * BATCHES_PER_WORKER
    by_bytes = math.ceil(sum(sizes) / policy.max_batch_bytes)
    return min(len(sizes), max(wanted, min(by_bytes, MAX_BATCHES)))


def batches(items: Sequence[T], size: Callable[[T], int], policy: BatchPolicy) -> list[list[T]]:
    """`items` cut, in their order, into `batch_count` batches of about equal bytes (or of
    `policy.batch_files` files each); always one batch at least, empty when there is nothing."""
    if not items:
        return [[]]
    sizes = [size(item) for item in items]
    if policy.batch_files is not None:
        step = policy.batch_files
        return [list(items[i : i + step]) for i in range(0, len(items), step)]
    count, total = batch_count(sizes, policy), sum(sizes)
    cut: list[list[T]] = []
    current: list[T] = []
    done = 0
    for index, (item, bytes_) in enumerate(zip(items, sizes, strict=True)):
        current.append(item)
        done += bytes_
        later_batches = count - len(cut) - 1
        later_items = len(items) - index - 1
        # Close a batch at its share of the bytes, or when each later batch needs every item left.
        if later_batches and (
            done >= total * (len(cut) + 1) / count or later_items == later_batches
        ):
            cut.append(current)
            current = []
    return [*cut, current]

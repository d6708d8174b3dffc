"""Per-file work fanned out as Dagster steps, so that any executor can spread it: a plan step's
batches as dynamic outputs (`tol_dagster.batches` cuts them), and a later step's files again.

Steps pass small values: a batch of mirror files travels as their names, and each step finds
them in the generation it leases again (`generations.pin_named`).
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import dagster as dg

from tol_dagster.batches import BatchPolicy, batches
from tol_dagster.defs.metadata import with_size
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration

T = TypeVar("T")


def batch_metadata(files: int, size: int) -> dict[str, dg.MetadataValue]:
    """What a batch holds: its files and their bytes."""
    return {"files": dg.MetadataValue.int(files), **with_size("bytes", size)}


def batch_outputs(
    items: Sequence[T],
    size: Callable[[T], int],
    policy: BatchPolicy,
    value: Callable[[list[T]], object],
) -> Iterator[dg.DynamicOutput[object]]:
    """One dynamic output `batch` per batch of `items`, `value(batch)` its value (one, empty,
    when there is nothing: the steps after it still run)."""
    for number, batch in enumerate(batches(items, size, policy)):
        yield dg.DynamicOutput(
            value(batch),
            mapping_key=f"batch_{number}",
            output_name="batch",
            metadata=batch_metadata(len(batch), sum(size(item) for item in batch)),
        )


def mirror_file_batches(
    files: Sequence[MirrorFile], policy: BatchPolicy
) -> Iterator[dg.DynamicOutput[object]]:
    """`files` of a pinned generation in batches, each passed on as its files' names."""
    sizes = {f.name: f.path.stat().st_size for f in files}
    yield from batch_outputs(
        files, lambda f: sizes[f.name], policy, lambda batch: tuple(f.name for f in batch)
    )


def batch_files(pin: PinnedGeneration, names: Sequence[str]) -> list[MirrorFile]:
    """The files a batch names, of the generation `pin` leases, in mirror order."""
    wanted = set(names)
    return [f for f in pin.mirror_files() if f.name in wanted]


def files_metadata(files: Sequence[MirrorFile]) -> dict[str, dg.MetadataValue]:
    """`batch_metadata` of mirror files."""
    return batch_metadata(len(files), sum(f.path.stat().st_size for f in files))

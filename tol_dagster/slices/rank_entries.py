"""A rank's taxon index entries, sorted by value once, and the mirror's files by name: what a
rank's plan finds its values' entries and first rows with, all values at once.

Why: a value's own table (a slice of the index) costs ~3.4 kB of Arrow objects, however few its
entries; a run in one sorted table costs two integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.slices.locate import refuse_unknown
from tol_dagster.store.mirror_files import MirrorFile


class ByValue:
    """A rank's index entries sorted by value (stably: in the mirror's order within a value),
    and the run of entries each value has."""

    def __init__(self, index: pa.Table, rank: str) -> None:
        entries = index.filter(pc.equal(index["rank"], rank))
        self.table = entries.take(pc.sort_indices(entries, [("value", "ascending")]))
        counts = pc.value_counts(self.table["value"])  # in order of appearance: sorted
        self.values = counts.field("values")
        self.stops = np.cumsum(counts.field("counts").to_numpy())
        self.starts = self.stops - counts.field("counts").to_numpy()

    def ranges(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """[start, stop) of each of `values`' run in `table` (empty where it has none)."""
        if not len(self.values):
            return np.zeros(len(values), np.int64), np.zeros(len(values), np.int64)
        at = pc.index_in(pa.array(values, self.values.type), value_set=self.values)
        found = at.is_valid().to_numpy(zero_copy_only=False)
        where = at.fill_null(0).to_numpy()
        return np.where(found, self.starts[where], 0), np.where(found, self.stops[where], 0)

    def runs(self, values: Sequence[str]) -> list[pa.Table]:
        """Each of `values`' entries (one lookup for all: each builds a hash of the rank's)."""
        starts, stops = self.ranges(values)
        return [self.slice(start, stop) for start, stop in zip(starts, stops, strict=True)]

    def slice(self, start: int, stop: int) -> pa.Table:
        """Entries [start, stop) of `table`."""
        return self.table.slice(int(start), int(stop - start))


def in_row_groups(entries: pa.Table, of: pa.Table) -> pa.Table:
    """Those of `entries` in the row groups that the entries `of` name."""
    return entries.filter(pc.is_in(_row_groups(entries), _row_groups(of)))


def _row_groups(entries: pa.Table) -> pa.ChunkedArray:
    """Each entry's row group as one value: "file#group"."""
    return pc.binary_join_element_wise(
        entries["file"], pc.cast(entries["row_group"], pa.string()), "#"
    )


@dataclass(frozen=True)
class FileOrder:
    """The mirror's files by name: their position in the mirror and their sha256."""

    position: dict[str, int]
    sha256: dict[str, str]

    @classmethod
    def of(cls, files: Sequence[MirrorFile]) -> FileOrder:
        return cls({f.name: i for i, f in enumerate(files)}, {f.name: f.sha256 for f in files})

    def positions(self, names: pa.ChunkedArray) -> np.ndarray:
        """The position of the file each of `names` names (StoreError if the mirror has none:
        the index is older than the mirror)."""
        at = pc.index_in(names, value_set=pa.array(list(self.position), names.type))
        if at.null_count:
            refuse_unknown(pc.unique(names.filter(at.is_null())).to_pylist(), self.position)
        return at.to_numpy().astype(np.int64)

"""Two configs of the dataset hold the same uuids in the same order (upstream's 1:1 promise).

bioclip-2 and bioclip-2.5 cut the same rows into different files (666 vs 933), so the check
streams both uuid columns side by side in row order, a record batch at a time, and never
holds more than a batch of each: memory stays flat over 233M rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.validation.checks import CONFIGS_ALIGNED, CheckResult

#: uuids read per batch from each side.
BATCH_ROWS = 65_536


@dataclass
class _Cursor:
    """Where one side stands: the current batch of uuids and how far into it we are."""

    batches: Iterator[tuple[str, int, pa.Array]]
    file: str = ""
    first_row: int = 0
    uuids: pa.Array | None = None
    offset: int = 0

    def ready(self) -> bool:
        """Move to a batch with uuids left; False at the end of the config."""
        while self.uuids is None or self.offset == len(self.uuids):
            batch = next(self.batches, None)
            if batch is None:
                return False
            self.file, self.first_row, self.uuids = batch
            self.offset = 0
        return True

    def take(self, count: int) -> pa.Array:
        assert self.uuids is not None
        taken = self.uuids.slice(self.offset, count)
        self.offset += count
        return taken

    def left(self) -> int:
        return 0 if self.uuids is None else len(self.uuids) - self.offset

    def where(self) -> tuple[str, int]:
        """(file, row in that file) of the current uuid."""
        return self.file, self.first_row + self.offset


def _uuid_batches(files: Sequence[Path]) -> Iterator[tuple[str, int, pa.Array]]:
    for path in files:
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=["uuid"]):
            yield Path(path).name, row, batch.column(0)
            row += batch.num_rows


def _compare_stretch(a: _Cursor, b: _Cursor, position: int) -> tuple[int, dict[str, object] | None]:
    """Compare the uuids both sides have left in their current batches (the first is row
    `position` of the configs): how many were compared, and the first difference (its
    position, and the file, row and uuid on each side), if any."""
    count = min(a.left(), b.left())
    (file_a, row_a), (file_b, row_b) = a.where(), b.where()
    left, right = a.take(count), b.take(count)
    same = pc.fill_null(pc.equal(left, right), False)
    both_null = pc.and_(pc.is_null(left), pc.is_null(right))
    differ = ~np.asarray(pc.or_(same, both_null).to_numpy(zero_copy_only=False), dtype=bool)
    if not differ.any():
        return count, None
    at = int(np.argmax(differ))
    return count, {
        "position": position + at,
        "file_a": file_a,
        "row_a": row_a + at,
        "uuid_a": left[at].as_py(),
        "file_b": file_b,
        "row_b": row_b + at,
        "uuid_b": right[at].as_py(),
    }


def check_configs_aligned(
    files_a: Sequence[Path],
    files_b: Sequence[Path],
    *,
    name_a: str = "config a",
    name_b: str = "config b",
) -> CheckResult:
    """The uuid columns of `files_a` and `files_b` (each in file order) are equal row by row.

    A failure names the first differing position, the file and row on each side, and both
    uuids; a config that ends early fails at the first row the other one has in excess.
    """
    rows_a = sum(pq.ParquetFile(p).metadata.num_rows for p in files_a)
    rows_b = sum(pq.ParquetFile(p).metadata.num_rows for p in files_b)
    details: dict[str, object] = {name_a: rows_a, name_b: rows_b}
    a, b = _Cursor(_uuid_batches(files_a)), _Cursor(_uuid_batches(files_b))
    position = 0
    while a.ready() and b.ready():
        compared, difference = _compare_stretch(a, b, position)
        if difference is not None:
            details.update(difference)
            return CheckResult(
                CONFIGS_ALIGNED,
                False,
                f"{name_a} and {name_b} differ at row {difference['position']:,}: "
                f"{difference['uuid_a']!r} ({difference['file_a']} row {difference['row_a']}) "
                f"vs {difference['uuid_b']!r} ({difference['file_b']} row {difference['row_b']})",
                details,
            )
        position += compared
    if a.ready() or b.ready():
        longer, shorter = (name_a, name_b) if a.ready() else (name_b, name_a)
        details["position"] = position
        return CheckResult(
            CONFIGS_ALIGNED,
            False,
            f"{shorter} ends after {position:,} rows but {longer} goes on "
            f"({name_a}: {rows_a:,} rows, {name_b}: {rows_b:,} rows)",
            details,
        )
    return CheckResult(
        CONFIGS_ALIGNED,
        True,
        f"{name_a} and {name_b} hold the same {position:,} uuids in the same order",
        details,
    )

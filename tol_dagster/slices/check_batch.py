"""A rank pass's slices checked in groups: each slice is built, held back as its temp file, and
checked with the next ones (`CheckBatch`); the checks read the group's rows with one DuckDB
query (`read_for_checks`), then each slice gets its own checks, exactly those of `extract_slice`,
and is published or removed.

Why: a DuckDB query costs ~3-4 ms of planning and opening however small its file, and a rank
pass checks thousands of slices of a few hundred rows: one query over 32 of them costs ~1 ms a
slice. Nothing is published unchecked: a held slice is only a temp file, removed if its checks
fail or the pass stops with an error (`discard`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tol_dagster import duck
from tol_dagster.errors import ValidationFailed
from tol_dagster.slices.checks import row_check_columns
from tol_dagster.slices.extract import SliceResult, checked
from tol_dagster.slices.keys import SliceKey, to_sql_filter
from tol_dagster.validation.checks import CheckResult

#: A group is checked once it holds this many slices, or this many rows; a slice of this many
#: rows or more reads its own (streamed: the group's query hands its rows over all at once).
BATCH_SLICES = 32
BATCH_ROWS = 250_000

#: A held slice's checks, given its rows as `read_for_checks` read them (None: read them).
HeldChecks = Callable[[Path, pa.Table | None], Sequence[CheckResult]]


@dataclass(frozen=True)
class Held:
    """A built slice waiting for its checks: its temp file, where it goes, what built it."""

    key: SliceKey
    temp: Path
    out: Path
    result: SliceResult
    checks: HeldChecks


def read_for_checks(slices: Sequence[tuple[Path, SliceKey]]) -> list[pa.Table | None]:
    """Each file's rows as the slice checks read them (`checks.row_check_columns`: its uuid's
    hash, whether the uuid is not NULL, whether the row fails the file's key), in file order,
    from one query over all the files; all None when DuckDB refuses the group, a file is named
    twice, or the rows do not come back file by file (each slice then reads its own, and an
    error names its file)."""
    if not slices:
        return []
    names = [str(path) for path, _ in slices]
    if len(set(names)) < len(names):  # one file under two keys: its rows are read once
        return [None] * len(slices)
    whens, params = [], []
    for number, (_, key) in enumerate(slices):
        where, values = to_sql_filter(key)
        whens.append(f"WHEN {number} THEN ({where})")
        params += values
    columns = row_check_columns(f"CASE file_index {' '.join(whens)} END")
    try:
        with duck.cursor() as con:
            read = con.sql(
                f"SELECT file_index, {columns} FROM read_parquet(?)", params=[*params, names]
            ).to_arrow_table()
    except duckdb.Error:
        return [None] * len(slices)
    return _by_file(read, len(names))


def _by_file(read: pa.Table, files: int) -> list[pa.Table | None]:
    """`read`'s rows split by its `file_index` column (DuckDB's place of the file in the list
    it was given, a number: a file's name on every row cost ~100 bytes a row) into one table
    per file, rows in the order read; all None unless each file's rows come as one run."""
    order = np.asarray(read["file_index"].to_numpy(), dtype=np.int64)
    if order.size and (np.any(np.diff(order) < 0) or order[0] < 0 or order[-1] >= files):
        return [None] * files
    bounds = np.searchsorted(order, np.arange(files + 1)).tolist()
    rows = read.drop_columns(["file_index"])
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


class CheckBatch:
    """Built slices held until their group is checked (`hold`); each that passes is handed to
    `publish(temp, out)` in the order held, each that fails is removed."""

    def __init__(self, publish: Callable[[Path, Path], None]) -> None:
        self.publish = publish
        self.held: list[Held] = []

    def hold(self, held: Held) -> list[SliceResult | ValidationFailed]:
        """Hold `held`; when the group is full, check it (see `flush`)."""
        self.held.append(held)
        rows = sum(h.result.rows for h in self.held)
        return self.flush() if len(self.held) >= BATCH_SLICES or rows >= BATCH_ROWS else []

    def flush(self) -> list[SliceResult | ValidationFailed]:
        """Check every held slice: the result of each one published (its checks in it), the
        error of each one not published, in the order held."""
        small = [h for h in self.held if h.result.rows < BATCH_ROWS]  # the others stream
        together = iter(read_for_checks([(h.temp, h.key) for h in small]))
        reads = [next(together) if h.result.rows < BATCH_ROWS else None for h in self.held]
        outcomes = []
        for read in reads:
            outcomes.append(self._settle(self.held[0], read))
            del self.held[0]
        return outcomes

    def _settle(self, held: Held, read: pa.Table | None) -> SliceResult | ValidationFailed:
        """Check `held` (its rows `read` with its group's), then publish or remove it."""
        started = time.perf_counter()
        try:
            checks = checked(held.key, held.temp, held.out, lambda path: held.checks(path, read))
        except ValidationFailed as error:
            held.temp.unlink(missing_ok=True)
            return error
        self.publish(held.temp, held.out)
        seconds = held.result.seconds + time.perf_counter() - started
        return dataclasses.replace(held.result, checks=checks, seconds=seconds)

    def discard(self) -> None:
        """Remove the temp files of the slices still held (the pass stopped on an error)."""
        for held in self.held:
            held.temp.unlink(missing_ok=True)
        self.held = []

"""The gate's one pass over a file's `emb`: `emb_finite`, each row's digest (`emb_digests`) and
its norm against the config's bounds (`emb_norms`), on the same decoded batches.

It runs beside the download of the same file and must keep up with it: `emb`'s pages are read in
place (`parquet.list_pages`, bounded by decompression), with pyarrow's decoding (about 3x the
cost, still faster than DuckDB, which widens `emb` to `FLOAT[]` first) for anything unusual;
memory stays at one page or one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.parquet.footer import SpliceError
from tol_dagster.schema import EmbBounds
from tol_dagster.validation import emb_digests, emb_norms
from tol_dagster.validation.checks import (
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    CheckResult,
    not_run,
)

#: Streamed reads with small batches keep one file's gate near 100 MB of Arrow memory; whole
#: row groups (50k rows, ~77 MB of `emb`) peaked at ~530 MB and decoded no faster.
READ_BUFFER_BYTES = 8 * 1024 * 1024
EMB_BATCH_ROWS = 10_000

#: Why the emb scan did not run on a file without `emb` (the schema check reports that file).
EMB_MISSING = "column 'emb' missing"


@dataclass(frozen=True)
class EmbScan:
    """What one pass over `emb` saw: non-finite rows, each row's digest (None when `emb` is not
    a list of floats), rows outside the config's bounds (None when none are pinned)."""

    rows: int
    null_rows: int
    nonfinite_rows: int
    first_nonfinite_row: int | None
    digests: np.ndarray | None = None
    bounds: emb_norms.BoundsScan | None = None


def scan_emb(
    path: Path,
    parquet: pq.ParquetFile,
    bounds: EmbBounds | None = None,
    handle: BinaryIO | None = None,
) -> EmbScan | str:
    """Count the rows of `emb` holding NaN, Inf or NULL, digest each row's bytes and measure
    its norm against `bounds`, in one pass over the rows of the file at `path` (`parquet`).

    The pages are read in place when they are the plain regular case (`parquet.list_pages`:
    no NULL, a fixed-size list of floats); otherwise, or at the first surprise, pyarrow decodes
    `emb` in batches of EMB_BATCH_ROWS (`handle`, when given, is what the pages are read
    through). One thread: the gate runs beside downloads and other files' gates. Returns why
    `emb` could not be read (EMB_MISSING without it), if it could not.
    """
    if "emb" not in parquet.schema_arrow.names:
        return EMB_MISSING
    pages = emb_digests.emb_pages(path, parquet, handle=handle)
    if pages is not None:
        try:
            return _scan(((matrix, None) for matrix in pages), bounds)
        except SpliceError:
            pass  # not the plain case: pyarrow reads it, and says what is wrong if anything is
    try:
        return _scan(_arrow_batches(parquet), bounds)
    except Exception as error:  # a page that does not decode, a type that is not a list
        return f"'emb' does not read ({error})"


#: A batch of rows: their values as (rows, dim) (None when `emb` is not a fixed-size list of
#: floats) and the Arrow array when it was decoded by pyarrow (for NULLs and other types).
Batch = tuple[np.ndarray | None, pa.FixedSizeListArray | None]


def _arrow_batches(parquet: pq.ParquetFile) -> Iterator[Batch]:
    for batch in parquet.iter_batches(
        batch_size=EMB_BATCH_ROWS, columns=["emb"], use_threads=False
    ):
        emb = batch.column(0)
        yield emb_digests.emb_matrix(emb), emb


def _scan(batches: Iterable[Batch], bounds: EmbBounds | None) -> EmbScan:
    """The scan of `batches`: NULL and non-finite rows, digests, norms."""
    rows = null_rows = nonfinite_rows = 0
    first_nonfinite: int | None = None
    digests: list[np.ndarray] | None = []
    in_bounds = None if bounds is None else emb_norms.BoundsScan(bounds)
    for matrix, emb in batches:
        valid = None
        if emb is not None and emb.null_count:
            null_rows += emb.null_count
            valid = emb.is_valid().to_numpy(zero_copy_only=False)
        norms = peaks = None
        if matrix is not None:
            norms, peaks = emb_norms.norms_and_peaks(matrix)
        nonfinite_in_batch = _nonfinite_rows(emb, peaks, valid)
        if nonfinite_in_batch.size:
            nonfinite_rows += nonfinite_in_batch.size
            if first_nonfinite is None:
                first_nonfinite = rows + int(nonfinite_in_batch[0])
        if matrix is None or norms is None or peaks is None:
            digests = in_bounds = None
        else:
            if digests is not None:
                digests.append(emb_digests.row_digests(matrix, valid))
            if in_bounds is not None:
                in_bounds.add(norms, peaks, valid, rows)
        if emb is not None:
            rows += len(emb)
        elif matrix is not None:
            rows += len(matrix)
    all_digests = None
    if digests is not None:
        all_digests = np.concatenate(digests) if digests else np.empty(0, np.uint64)
    return EmbScan(rows, null_rows, nonfinite_rows, first_nonfinite, all_digests, in_bounds)


def _nonfinite_rows(
    emb: pa.FixedSizeListArray | None, peaks: np.ndarray | None, valid: np.ndarray | None
) -> np.ndarray:
    """The rows (in the batch, ascending) holding a NaN, an Inf or a NULL value; NULL rows are
    `emb_finite`'s other count, not these.

    Without NULL values, from the rows' peaks (`emb_norms.norms_and_peaks`: not finite
    exactly there). Otherwise Arrow's `is_finite` on the values."""
    if peaks is not None and (emb is None or not emb.values.null_count):
        bad = ~np.isfinite(peaks)
        if valid is not None:
            bad &= valid
        return np.flatnonzero(bad)
    assert emb is not None  # a batch without values as a matrix comes from pyarrow
    values = pc.list_flatten(emb)
    finite = pc.is_finite(values)
    if not len(values) or (not values.null_count and pc.all(finite).as_py()):
        return np.empty(0, np.int64)
    bad = pc.invert(pc.fill_null(finite, False))
    return np.unique(pc.list_parent_indices(emb).filter(bad).to_numpy())


def emb_finite_result(name: str, emb: EmbScan | str) -> CheckResult:
    """`emb_finite`: no row holds NaN, Inf or a NULL value, and no row is NULL."""
    if isinstance(emb, str):
        return not_run(EMB_FINITE, name, emb)
    details = {
        "rows": emb.rows,
        "null_rows": emb.null_rows,
        "nonfinite_rows": emb.nonfinite_rows,
        "first_nonfinite_row": emb.first_nonfinite_row,
    }
    if not emb.null_rows and not emb.nonfinite_rows:
        return CheckResult(
            EMB_FINITE, True, f"{name}: emb finite in all {emb.rows:,} rows", details
        )
    problems = []
    if emb.nonfinite_rows:
        problems.append(
            f"{emb.nonfinite_rows:,} rows hold NaN, Inf or NULL values "
            f"(first at row {emb.first_nonfinite_row})"
        )
    if emb.null_rows:
        problems.append(f"{emb.null_rows:,} rows have a NULL emb")
    return CheckResult(
        EMB_FINITE, False, f"{name}: emb not finite: " + "; ".join(problems), details
    )


def emb_norms_result(
    name: str, emb: EmbScan | str, bounds: EmbBounds | None, uuids: pa.ChunkedArray | None
) -> CheckResult:
    """`emb_norms_within_bounds`: failing rows named with their uuid when `uuids` read."""
    if isinstance(emb, str):
        return not_run(EMB_NORMS_WITHIN_BOUNDS, name, emb)
    if bounds is None:
        return CheckResult(
            EMB_NORMS_WITHIN_BOUNDS, True, f"{name}: no emb bounds pinned for this config"
        )
    if emb.bounds is None:
        return not_run(EMB_NORMS_WITHIN_BOUNDS, name, "'emb' is not a fixed-size list of floats")
    uuid_at = None
    if uuids is not None:
        uuid_at = {row: uuids[row].as_py() for row, _, _ in emb.bounds.examples if row < len(uuids)}
    return emb_norms.bounds_result(name, emb.bounds, uuid_at)

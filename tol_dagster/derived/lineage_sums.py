"""One mirror file's embeddings summed per full lineage: the centroids' per-file part.

`emb` is read page by page in place, as the gate reads it (`emb_digests.emb_pages`): half the
CPU of DuckDB decoding it and casting it to FLOAT[dim] (1.6x faster in wall time), the largest
cost of a first build at full scale; DuckDB reads anything else (NULL rows, lists of other
types). Either way each run of one lineage in the sorted file is summed with one numpy call, in
float64 from the values as float32 (DuckDB's cast: float16 and float32 exactly, float64
rounded), and a lineage's runs are added in file order. Float16 values summed in float64 are
exact unless a lineage's sum passes 2**29 (multiples of 2**-24), so both paths give the same
bits for this dataset's configs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.sorted_runs import run_starts, sort_by, sum_row_runs
from tol_dagster.parquet.footer import SpliceError
from tol_dagster.schema import RANKS, quote_ident
from tol_dagster.validation.emb_digests import emb_pages

#: Rows DuckDB decodes at a time (~50 MB of float32 at 768 dimensions).
BATCH_ROWS = 16_384


def sums_schema(dim: int) -> pa.Schema:
    """A part: one row per lineage of the file, its image count and float64 sum."""
    return pa.schema(
        [
            *(pa.field(rank, pa.string()) for rank in RANKS),
            pa.field("images", pa.int64()),
            pa.field("sum", pa.list_(pa.float64(), dim)),
        ]
    )


def file_sums(path: Path, dim: int) -> pa.Table:
    """Float64 sums and counts of the non-NULL embeddings of the file at `path` per full
    lineage, sorted by lineage (`sums_schema`). ValueError, naming the file, if its
    embeddings are not `dim` values wide."""
    parquet = pq.ParquetFile(path)
    if emb_pages(path, parquet) is not None:  # a generator: nothing is read yet
        if parquet.schema_arrow.field("emb").type.list_size != dim:
            raise _width_error(path, dim)
        try:
            return _page_sums(path, parquet, dim)
        except SpliceError:
            pass  # not the plain case (a NULL row, an unusual page): DuckDB reads the file
    return duckdb_sums(path, dim)


def _width_error(path: Path, dim: int) -> ValueError:
    return ValueError(f"{path}: its embeddings are not {dim} values wide")


def _page_sums(path: Path, parquet: pq.ParquetFile, dim: int) -> pa.Table:
    """The sums of runs of one lineage from the pages, the row groups in two halves on two
    threads: decompression and numpy's sums let go of the GIL, the loop over runs does not
    (1.24x the speed of one thread on upstream-sized files of 32 rows a run, measured)."""
    keys = parquet.read(columns=list(RANKS), use_threads=False)
    starts = run_starts(keys, RANKS)
    sums = np.zeros((len(starts), dim))  # as numpy's sums start
    halves = _halves(parquet.metadata)
    work = partial(_half_sums, path, parquet, starts, sums)
    with ThreadPoolExecutor(len(halves)) as pool:
        carries = list(pool.map(work, *zip(*halves, strict=True)))
    for (_, first, _), carry in zip(halves, carries, strict=True):
        if carry is not None:  # a run across the cut: its first half's sum, then its second's
            sums[int(np.searchsorted(starts, first, "right")) - 1] += carry
    counts = np.diff(starts, append=keys.num_rows)
    return _by_lineage(keys.take(starts), counts, sums)


def _halves(metadata: pq.FileMetaData) -> list[tuple[range, int, int]]:
    """The row groups in one or two halves, each with its first row and the end of its rows."""
    rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    bounds = np.cumsum([0, *rows]).tolist()
    cuts = sorted({0, (len(rows) + 1) // 2, len(rows)})
    return [(range(a, b), bounds[a], bounds[b]) for a, b in pairwise(cuts)] or [(range(0), 0, 0)]


def _half_sums(
    path: Path,
    parquet: pq.ParquetFile,
    starts: np.ndarray,
    sums: np.ndarray,
    groups: range,
    first: int,
    end: int,
) -> np.ndarray | None:
    """Add the rows [`first`, `end`) of row groups `groups` to `sums`, one row per run that
    begins at `starts`, shared by the halves: a half writes only the runs that begin in it.
    Its rows of a run begun before `first` are summed apart and returned (else None)."""
    low = int(np.searchsorted(starts, first, "right")) - 1
    shared = low >= 0 and starts[low] < first
    carry = np.zeros(sums.shape[1]) if shared else None
    carry_end = int(starts[low + 1]) if shared and low + 1 < len(starts) else end
    for page in emb_pages(path, parquet, groups) or ():
        values = page.astype(np.float32) if page.dtype == np.float64 else page
        if carry is not None and first < carry_end:
            cut = min(len(values), carry_end - first)
            carry += values[:cut].sum(axis=0, dtype=np.float64)
            values, first = values[cut:], first + cut
        _add_runs(sums, starts, values, first)
        first += len(values)
    return carry


def _add_runs(sums: np.ndarray, starts: np.ndarray, values: np.ndarray, first: int) -> None:
    """Add to `sums` (one row per run that begins at `starts`) the rows of one page, which
    holds the file's rows from `first`."""
    if not len(values):
        return
    low = int(np.searchsorted(starts, first, "right")) - 1
    high = int(np.searchsorted(starts, first + len(values), "left"))
    cuts = [0, *(starts[low + 1 : high] - first).tolist(), len(values)]
    for run, (begin, end) in enumerate(pairwise(cuts), start=low):
        sums[run] += values[begin:end].sum(axis=0, dtype=np.float64)


def _by_lineage(keys: pa.Table, counts: np.ndarray, sums: np.ndarray) -> pa.Table:
    """One row per lineage from one per run of it (a lineage recurs in another source
    dataset), sorted, its runs' sums added in file order."""
    indexed = sort_by(keys.append_column("run", pa.array(np.arange(len(counts)))), RANKS)
    order = indexed["run"].to_numpy()
    lineages = run_starts(indexed, RANKS)
    if len(lineages) < len(order):
        sums, counts = sum_row_runs(sums[order], lineages), np.add.reduceat(counts[order], lineages)
    elif (np.diff(order) < 0).any():  # else in order already: no copy of the sums
        sums, counts = sums[order], counts[order]
    return _sums_table(indexed.select(list(RANKS)).take(lineages), counts, sums)


def _sums_table(keys: pa.Table, counts: np.ndarray, sums: np.ndarray) -> pa.Table:
    dim = sums.shape[1]
    return pa.table(
        {
            **{rank: keys[rank].cast(pa.string()) for rank in RANKS},
            "images": pa.array(counts, pa.int64()),
            "sum": pa.FixedSizeListArray.from_arrays(pa.array(sums.ravel()), dim),
        },
        schema=sums_schema(dim),
    )


def duckdb_sums(path: Path, dim: int) -> pa.Table:
    """`file_sums` through DuckDB, which casts `emb` to FLOAT[dim] (a plain matrix for numpy,
    and a file of another width refused); rows whose `emb` is NULL are left out."""
    sums: dict[tuple[str | None, ...], np.ndarray] = {}
    counts: dict[tuple[str | None, ...], int] = {}
    ranks = ", ".join(quote_ident(r) for r in RANKS)
    with duck.cursor() as con:
        try:
            reader = con.sql(
                f"SELECT {ranks}, emb::FLOAT[{dim}] AS emb FROM read_parquet(?)"
                " WHERE emb IS NOT NULL",
                params=[str(path)],
            ).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                vectors = batch.column("emb").flatten().to_numpy().reshape(-1, dim)
                starts = run_starts(batch, RANKS)
                ends = [*starts[1:].tolist(), batch.num_rows]
                keys = batch.select(list(RANKS)).take(starts).to_pylist()
                for row, start, end in zip(keys, starts.tolist(), ends, strict=True):
                    key = tuple(row.values())
                    total = vectors[start:end].sum(axis=0, dtype=np.float64)
                    if key in sums:
                        sums[key] += total
                    else:
                        sums[key] = total
                    counts[key] = counts.get(key, 0) + end - start
        except duckdb.ConversionException as error:
            raise _width_error(path, dim) from error
    lineages = list(sums)
    table = pa.table({rank: [k[i] for k in lineages] for i, rank in enumerate(RANKS)})
    matrix = np.stack([sums[k] for k in lineages]) if lineages else np.zeros((0, dim))
    counted = np.array([counts[k] for k in lineages], np.int64)
    return sort_by(_sums_table(table, counted, matrix), RANKS)

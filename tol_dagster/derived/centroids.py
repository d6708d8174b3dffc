"""The centroid table: mean embedding and image count per full lineage, at species level (rows
whose species is known) and at genus level (rows whose genus is known, species or not).

One streaming pass per mirror file sums its embeddings per lineage in float64 (`lineage_sums`);
those sums and counts are kept under the file's content hash, so after a resync only new files
are read, and the published table is their sum divided by the count, stored as float32. Memory
stays bounded on both sides: files are read a page or a batch at a time, and the recombination
walks the lineages in sorted order a chunk at a time over memory-mapped per-file sums.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.derived.lineage_sums import file_sums
from tol_dagster.derived.parts import files_to_compute, read_part, read_published, write_part
from tol_dagster.derived.sorted_runs import run_starts, sum_row_runs
from tol_dagster.derived.table_records import record_table
from tol_dagster.parquet.list_table import ListTableWriter
from tol_dagster.schema import RANKS
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.hashing import HashingWriter
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.thread_pools import prefetched, shared_pool

#: Per-file part under the file's derived folder (bump the suffix when its meaning or its
#: container changes: v2 added the crc32).
SUMS_PART = "centroid_sums.v2.arrow"

#: Bytes of float64 sums gathered at a time when recombining.
CHUNK_BYTES = 64 << 20

#: The ranks of a genus-level lineage: kingdom down to genus.
_TO_GENUS = RANKS[:-1]
_LABELS = ["level", *RANKS]
#: Means of float16 vectors barely compress, and dictionaries and statistics on them only cost.
_WRITER_OPTIONS = {
    "compression": {name: "zstd" for name in [*_LABELS, "images"]} | {"centroid": "none"},
    "use_dictionary": _LABELS,
    "write_statistics": [*_LABELS, "images"],
}


@dataclass(frozen=True)
class CentroidResult:
    """What a build did: the files it (re)read and the table it published."""

    recomputed: tuple[str, ...]
    species: int
    genus: int
    path: Path


def centroid_schema(dim: int) -> pa.Schema:
    """The published table: one row per (level, lineage)."""
    return pa.schema(
        [
            pa.field("level", pa.string()),
            *(pa.field(rank, pa.string()) for rank in RANKS),
            pa.field("images", pa.int64()),
            pa.field("centroid", pa.list_(pa.float32(), dim)),
        ]
    )


def build_centroids(
    files: Sequence[MirrorFile], layout: Layout, config: str, dim: int, *, force: bool = False
) -> CentroidResult:
    """Sum the embeddings of the files not read yet (all when `force`), then publish the table."""
    recomputed = write_parts(files, layout, config, dim, force=force)
    path = layout.centroids_path(config)
    species, genus, written = _publish(files, layout, config, dim, path)
    record_table(layout, config, "centroids", path, written)
    return CentroidResult(recomputed=recomputed, species=species, genus=genus, path=path)


def write_parts(
    files: Sequence[MirrorFile], layout: Layout, config: str, dim: int, *, force: bool = False
) -> tuple[str, ...]:
    """Sum the embeddings of the files of `files` not read yet (all when `force`), a part
    each; the names of those read. Any subset of the mirror, in any step: parts are per file."""
    stale = files_to_compute(files, layout, config, SUMS_PART, force=force)
    for file in stale:
        write_part(file_sums(file.path, dim), layout, config, file, SUMS_PART)
    return tuple(f.name for f in stale)


def read_centroids(layout: Layout, config: str) -> pa.Table:
    """The published centroid table."""
    return read_published(layout.centroids_path(config), f"tol/{config}/centroids")


def _publish(
    files: Sequence[MirrorFile], layout: Layout, config: str, dim: int, path: Path
) -> tuple[int, int, tuple[os.stat_result, str]]:
    """Write species rows, then genus rows, streaming; return how many of each, and the
    file's status and sha256 (hashed as written, by the thread that writes: the next chunk
    is summed meanwhile)."""
    schema = centroid_schema(dim)
    species = genus = 0
    with (
        atomic_path(path) as tmp,
        tempfile.TemporaryFile(dir=path.parent) as genus_file,
        open(tmp, "wb") as handle,
    ):
        sink = HashingWriter(handle)
        writer = ListTableWriter(sink, schema, "centroid", _table_writer)
        # Genus rows wait in a temp file so that the table lists all species rows first.
        chunks = _centroid_chunks(files, layout, config, dim)
        with (
            pa.ipc.new_stream(genus_file, schema) as genus_writer,
            contextlib.closing(prefetched(chunks, 1, shared_pool("centroid-chunks", 2))) as ahead,
        ):
            for species_rows, genus_rows in ahead:  # the next chunk summed while one is written
                writer.write_table(species_rows)
                genus_writer.write_table(genus_rows)
                species += species_rows.num_rows
                genus += genus_rows.num_rows
        genus_file.seek(0)
        for batch in pa.ipc.open_stream(genus_file):
            writer.write_table(pa.Table.from_batches([batch]))
        writer.close()
        written = sink.written()
    return species, genus, written


def _table_writer(sink: Any, schema: pa.Schema, rows: int) -> pq.ParquetWriter:
    """pyarrow's writer of the table's columns but `centroid` (written by `list_table`, but
    for a width it does not encode)."""
    return pq.ParquetWriter(sink, schema, **_WRITER_OPTIONS)


def _centroid_chunks(
    files: Sequence[MirrorFile], layout: Layout, config: str, dim: int
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(species rows, genus rows) of the centroid table, a chunk of whole genera at a time.

    The per-file sums are memory-mapped; only their keys are sorted in memory. Each chunk adds
    the parts' sums of a few genera into their lineages (species level, `_lineage_sums`), then
    sums runs of equal kingdom..genus among those (genus level).
    """
    parts = []
    for file in files:
        recompute = partial(write_parts, [file], layout, config, dim, force=True)
        part = read_part(layout, config, file, SUMS_PART, recompute)
        if part.schema.field("sum").type.list_size != dim:
            raise ValueError(f"{file.path}: its embeddings are not {dim} values wide")
        if part.num_rows:
            parts.append(part)
    if not parts:
        return
    # One chunk: Arrow sorts a chunked table chunk by chunk and merges, 2x slower at 666 parts.
    keys = pa.concat_tables([part.select([*RANKS, "images"]) for part in parts]).combine_chunks()
    # Ascending, NULLs last: the mirror's order, so genera are runs of the sorted keys.
    order = pc.sort_indices(keys, sort_keys=[(rank, "ascending") for rank in RANKS])
    order = order.to_numpy().astype(np.int64)
    keys = keys.take(order)
    lineage_starts = run_starts(keys, RANKS)
    genus_starts = run_starts(keys, _TO_GENUS)
    images = keys["images"].to_numpy()
    matrices = [
        part["sum"].combine_chunks().flatten().to_numpy().reshape(-1, dim) for part in parts
    ]
    offsets = np.cumsum([0, *(len(m) for m in matrices)])

    chunk_rows = max(1, CHUNK_BYTES // (8 * dim))
    bounds = [*genus_starts.tolist(), len(keys)]
    first = 0
    while first < len(bounds) - 1:
        # Whole genera, at least one, up to about chunk_rows rows.
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + chunk_rows, "right")) - 1)
        start, end = bounds[first], bounds[last]
        runs = lineage_starts[(lineage_starts >= start) & (lineage_starts < end)] - start
        sums = _lineage_sums(matrices, offsets, order[start:end], runs)
        counts = np.add.reduceat(images[start:end], runs)
        # A genus is a run of lineages: sum the lineage sums, not the rows again.
        genera = np.searchsorted(runs, np.asarray(bounds[first:last]) - start)
        yield (
            _level_rows("species", keys.take(runs + start), sums, counts),
            _level_rows(
                "genus",
                keys.take(runs[genera] + start),
                sum_row_runs(sums, genera),
                np.add.reduceat(counts, genera),
            ),
        )
        first = last


def _lineage_sums(
    matrices: list[np.ndarray], offsets: np.ndarray, rows: np.ndarray, runs: np.ndarray
) -> np.ndarray:
    """The sums of the lineages beginning at `runs` of the sorted rows `rows` (numbered across
    the concatenated parts), each part's rows added in part order, as a sum row after row.

    A part is sorted like the keys and holds a lineage once, so its rows in a chunk are one
    slice of its matrix, for distinct lineages: added at once, no copy of the rows in sorted
    order first. A lineage's first row is copied, not added (adding it to -0.0, exactly), so
    the sums are never filled first: most lineages are in one part only.
    """
    sums = np.empty((len(runs), matrices[0].shape[1]))
    filled = np.zeros(len(runs), dtype=bool)
    lineage = np.zeros(len(rows), dtype=np.int64)
    lineage[runs[1:]] = 1
    lineage = np.cumsum(lineage)
    part_of = np.searchsorted(offsets, rows, "right") - 1
    # Rows grouped by part with one sort: a mask per part would test every row once per part.
    order = np.argsort(part_of, kind="stable")
    starts = np.flatnonzero(np.diff(part_of[order], prepend=-1))
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), len(order)], strict=True):
        mine = order[start:end]
        part = part_of[mine[0]]
        inside, targets = rows[mine] - offsets[part], lineage[mine]
        if _one_slice(inside) and (np.diff(targets) > 0).all():
            _add_slice(sums, filled, targets, matrices[part][inside[0] : inside[-1] + 1])
        else:  # not a sorted part of unique lineages: added one row at a time, still in order
            sums[targets[~filled[targets]]] = -0.0
            np.add.at(sums, targets, matrices[part][inside])
        filled[targets] = True
    return sums


def _one_slice(inside: np.ndarray) -> bool:
    """Whether the rows `inside` (ascending) are consecutive."""
    return bool(inside[-1] - inside[0] == len(inside) - 1 and (np.diff(inside) == 1).all())


def _add_slice(
    sums: np.ndarray, filled: np.ndarray, targets: np.ndarray, block: np.ndarray
) -> None:
    """Add the rows of `block` to the distinct, ascending lineages `targets`: copied where a
    lineage has no sum yet (`filled`), a plain copy when they are consecutive lineages."""
    new = ~filled[targets]
    if not new.all():
        sums[targets[~new]] += block[~new]
        targets, block = targets[new], block[new]
    if not len(targets):
        return
    if targets[-1] - targets[0] == len(targets) - 1:
        sums[targets[0] : targets[-1] + 1] = block
    else:
        sums[targets] = block


def _level_rows(level: str, keys: pa.Table, sums: np.ndarray, counts: np.ndarray) -> pa.Table:
    """Centroid rows of `level` from lineage `keys` and their sums and counts: ranks below the
    level are NULL, and rows whose rank of `level` is NULL are left out."""
    known = pc.is_valid(keys[level]).to_numpy(zero_copy_only=False)
    depth = RANKS.index(level) + 1
    # Divided in float64 and rounded once, straight into float32: no float64 copy
    centroid = np.divide(
        sums, counts[:, None], out=np.empty(sums.shape, np.float32), casting="same_kind"
    )
    if not known.all():
        keys, centroid, counts = keys.filter(known), centroid[known], counts[known]
    return pa.table(
        {
            "level": pa.repeat(level, len(counts)),
            **{rank: keys[rank] for rank in RANKS[:depth]},
            **{rank: pa.nulls(len(counts), pa.string()) for rank in RANKS[depth:]},
            "images": pa.array(counts, pa.int64()),
            "centroid": pa.FixedSizeListArray.from_arrays(
                pa.array(centroid.ravel()), centroid.shape[1]
            ),
        },
        schema=centroid_schema(centroid.shape[1]),
    )

"""The crc32 of each row group's `uuid` and `emb` column chunks as the gate read them, kept per
validated file, so that a slice row group copied whole from the mirror is proven to be the
bytes the gate verified, not merely the bytes on disk now.

Why: the slice check proves such a row group without decoding it (`slices.emb_check`). A
comparison of its chunks with the mirror file's bytes passed bytes that rotted in the mirror
after the gate (until the audit re-hashes it), since the splicer copies the same rotten
bytes. The gate takes these crcs from the very reads its sha256 comes from
(`store.hashing.HashingFile`, ISA-L's crc32: ~29 GB/s here), against decoding the row group
again. A crc32 sees every burst of up to 32 flipped bits and misses other random damage with
odds of 2**-32; rot is the threat here, since a process that can write to the mirror can write
the crcs as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow.parquet as pq

from tol_dagster.errors import StoreError
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import derived_path, read_kept
from tol_dagster.store.hashing import HashingFile, crc32, ordered
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile, changed_on_disk

#: The kept table: per row group, (offset, length, crc32) of its `uuid` and `emb` chunks.
CRCS_NAME = "chunk_crcs.v1.npy"
#: The columns whose chunks are kept, in the table's order.
COLUMNS = ("uuid", "emb")
#: Bytes read at a time when a crc is computed from a file.
BLOCK = 8 << 20


def crcs_path(layout: Layout, config: str, file: MirrorFile) -> Path:
    """Where the chunk crcs of `file` (by its sha256) are kept."""
    return derived_path(layout, config, file, CRCS_NAME)


def chunk_range(row_group: pq.RowGroupMetaData, column: str) -> tuple[int, int] | None:
    """(offset, length) of top-level `column`'s chunk in `row_group`, its dictionary page
    included; None if the row group has no such column (or it has several leaves)."""
    found = [
        row_group.column(i)
        for i in range(row_group.num_columns)
        if row_group.column(i).path_in_schema.split(".")[0] == column
    ]
    if len(found) != 1:
        return None
    chunk = found[0]
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset:
        start = min(start, chunk.dictionary_page_offset)
    return start, chunk.total_compressed_size


def ranges(metadata: pq.FileMetaData) -> list[tuple[int, int]] | None:
    """The ranges to keep crcs of, row group by row group, in COLUMNS order; None if a row
    group lacks one of COLUMNS or the chunks are not laid out in that order, apart (a footer
    no writer we know makes)."""
    found = [
        chunk_range(metadata.row_group(group), column)
        for group in range(metadata.num_row_groups)
        for column in COLUMNS
    ]
    chunks = [r for r in found if r is not None]
    return chunks if len(chunks) == len(found) and ordered(chunks) else None


def table(chunks: list[tuple[int, int]], crcs: list[int | None]) -> np.ndarray | None:
    """The kept table (row groups, COLUMNS, 3) of `ranges` and their crcs; None if a crc is
    missing (a range past the end of the file)."""
    if None in crcs:
        return None
    rows = [(offset, length, crc) for (offset, length), crc in zip(chunks, crcs, strict=True)]
    return np.array(rows, dtype=np.uint64).reshape(-1, len(COLUMNS), 3)


def keep(path: Path | None, chunks: list[tuple[int, int]] | None, crcs: list[int | None]) -> None:
    """Save the table of the gate's `chunks` (`ranges`) and their `crcs` at `path` when both are
    given and every chunk was read whole (`save` without the directory's fsync)."""
    kept = None if path is None or chunks is None else table(chunks, crcs)
    if path is not None and kept is not None:
        save(path, kept, sync_dir=False)


def save(path: Path, kept: np.ndarray, *, sync_dir: bool = True) -> None:
    """Write the table atomically; `sync_dir` as for `atomic_path`."""
    with atomic_path(path, sync_dir=sync_dir) as temp, open(temp, "wb") as handle:
        np.save(handle, kept, allow_pickle=False)


def load(path: Path) -> np.ndarray:
    """A kept table."""
    return np.asarray(read_kept(path, lambda p: np.load(p, allow_pickle=False)))


def compute(file: MirrorFile) -> np.ndarray:
    """The table of a mirror file the gate validated before the crcs were kept, from one read
    of all of it: its bytes must still hash to its sha256, so the crcs are of the bytes the
    gate verified (StoreError if they do not: the file changed on disk since)."""
    chunks = ranges(pq.read_metadata(file.path))
    if chunks is None:
        raise StoreError(
            f"{file.path}: a row group lacks one of the columns {', '.join(COLUMNS)}, or their "
            "chunks are not laid out one after another: its row groups cannot be proven whole"
        )
    with HashingFile(file.path) as reads:
        reads.track(chunks)
        sha256, kept = reads.sha256(), table(chunks, reads.crcs())
    if sha256 != file.sha256.lower() or kept is None:
        raise changed_on_disk(file, sha256)
    return kept


def ensure(file: MirrorFile, layout: Layout, config: str) -> bool:
    """Make sure `file`'s table is kept; True if it had to be computed."""
    path = crcs_path(layout, config, file)
    if path.is_file():
        return False
    save(path, compute(file))
    return True


def crc_of(handle: BinaryIO, offset: int, length: int) -> int | None:
    """The crc32 of `length` bytes at `offset` of an open binary file; None if it ends before."""
    crc = 0
    handle.seek(offset)
    while length > 0:
        block = handle.read(min(length, BLOCK))
        if not block:
            return None
        crc = crc32(block, crc)
        length -= len(block)
    return crc

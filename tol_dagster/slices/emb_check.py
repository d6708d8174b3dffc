"""`emb_matches_mirror`: every row of a slice is a row of the mirror, with the same `emb` bytes,
in mirror order, proven without decoding the mirror.

The slice is read back independently of what wrote it (the splicer, the page reader): by
pyarrow, and `emb` by the strict page reader the gate uses. Each row's uuid hash is looked up
in the digest tables the gate keeps for the mirror
files by sha256 (`validation.emb_digests`: uuid hash sorted, `emb` digest, row in the file),
which places it at a (file, row) of the mirror; places must increase from row to row. Then:

- a slice row group that holds exactly one mirror row group, whole, is proven by the crc32 of
  its `uuid` and `emb` column chunks (the splicer copies them as bytes): each must be the one
  the gate took of the mirror chunk from the reads its sha256 came from
  (`validation.chunk_crcs`), so bytes that rotted in the mirror since fail;
- any other rows have their `emb` decoded (from the pages in place, `parquet.list_pages`, or
  by pyarrow for anything unusual) and digested as the gate digests them,
  and each digest must equal the mirror row's (any one changed value is always seen; several
  cancel out with odds of about 2**-32); pages that do not decode fail the check too.

With the row-count and key checks this makes the slice exactly the mirror's rows, and its cost
follows the slice, not the mirror row groups it was cut from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import StoreError
from tol_dagster.parquet.file_versions import per_file_version
from tol_dagster.parquet.footer import SpliceError
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.locate import plan_scans, row_group_starts
from tol_dagster.slices.slice_uuids import (
    SliceUuids,
    read_slice_uuids,
    row_group_column,
    uuid_at,
)
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs, kept_tables
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.chunk_crcs import crcs_path
from tol_dagster.validation.emb_digests import (
    digests_path,
    emb_matrix,
    emb_pages,
    ensure_table,
    row_digests,
)
from tol_dagster.validation.uuid_index import kept_array

EMB_MATCHES_MIRROR = "emb_matches_mirror"

logger = logging.getLogger("tol_dagster.slices.emb_check")


def check_emb_matches_mirror(
    path: Path,
    key: SliceKey,
    files: Sequence[MirrorFile],
    index: pa.Table | None = None,
    *,
    layout: Layout,
    config: str,
    written: pq.ParquetFile | None = None,
    uuids: SliceUuids | None = None,
) -> CheckResult:
    """See the module's docstring. `index` (the taxon index) narrows the mirror files looked in
    to those the key's rows lie in (every file without it); `layout` and `config` say where the
    gate keeps their digests and chunk crcs (computed here for a file validated before they
    existed);
    `written`, the slice opened by pyarrow, and its `uuids` are read here unless given."""
    candidates = files if index is None else [scan.file for scan in plan_scans(key, files, index)]
    for file in candidates:
        ensure_table(file, layout, config)
        chunk_crcs.ensure(file, layout, config)
    if written is None:
        with pq.ParquetFile(path) as opened:
            return _checked(path, key, opened, read_slice_uuids(opened), candidates, layout, config)
    uuids = uuids if uuids is not None else read_slice_uuids(written)
    return _checked(path, key, written, uuids, candidates, layout, config)


def _checked(
    path: Path,
    key: SliceKey,
    written: pq.ParquetFile,
    uuids: SliceUuids,
    candidates: Sequence[MirrorFile],
    layout: Layout,
    config: str,
) -> CheckResult:
    """`_check` against the kept tables of `candidates`; when it fails, once more after those
    tables are checked against the mirror files and the damaged ones computed anew
    (`kept_tables.mend`), so that a flipped byte in a table blames no slice."""

    def check() -> CheckResult:
        mirror = _Mirror(
            candidates,
            [digests_path(layout, config, f) for f in candidates],
            [crcs_path(layout, config, f) for f in candidates],
        )
        return _check(path, key, written, mirror, uuids)

    result = check()
    if result.passed:
        return result
    try:
        mended = [str(p) for file in candidates for p in kept_tables.mend(file, layout, config)]
    except StoreError as error:  # a mirror file changed on disk since the gate: say so
        return CheckResult(result.check, False, f"{result.message}; {error}", result.details)
    if not mended:
        return result
    logger.warning("damaged, computed anew from the mirror: %s", ", ".join(mended))
    again = check()
    return CheckResult(again.check, again.passed, again.message, again.details | {"mended": mended})


def _check(
    path: Path, key: SliceKey, written: pq.ParquetFile, mirror: _Mirror, uuids: SliceUuids
) -> CheckResult:
    """`emb_matches_mirror` of the slice at `path` (`written`, its `uuids`) against `mirror`."""
    verdict = _Verdict()
    for group, read in enumerate(uuids.groups()):
        verdict.uuid_at = partial(uuid_at, written, group)
        placed = mirror.place(read.hashes, max(verdict.last[0], 0))
        owner, row = placed.owner, placed.row
        source = mirror.whole_group(owner, row)
        if source is not None and _same_chunks(path, written.metadata.row_group(group), source):
            same = np.ones(read.hashes.size, dtype=bool)
        else:
            try:
                digests = _digests(path, written, group)
            except (pa.ArrowException, OSError):  # pages that do not decode: damaged bytes
                verdict.fault_all(read.hashes.size, "decode")
                continue
            if digests is None:
                verdict.fault_all(read.hashes.size, "type")
                continue
            same = mirror.same_digests(placed, digests)
        owner[~read.valid] = -1
        verdict.add(owner, row, same)
    return verdict.result(key)


def _digests(path: Path, written: pq.ParquetFile, group: int) -> np.ndarray | None:
    """The `emb` digest of each row of one row group (None: `emb` is not a list of floats).

    Its pages are read in place when they are the plain regular case (`parquet.list_pages`,
    about 3x cheaper), by pyarrow otherwise: the reader is not the writer either way."""
    pages = emb_pages(path, written, [group])
    if pages is not None:
        try:
            return np.concatenate([np.empty(0, np.uint64), *map(row_digests, pages)])
        except SpliceError:
            pass  # not the plain case: pyarrow decodes it, or says why it cannot
    emb = row_group_column(written, group, "emb")
    matrix = emb_matrix(emb)
    if matrix is None:
        return None
    return row_digests(
        matrix, np.asarray(emb.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    )


@dataclass(frozen=True)
class _Placed:
    """Where a row group's uuid hashes are in the mirror's digest tables (see `place`)."""

    owner: np.ndarray
    row: np.ndarray
    low: np.ndarray
    high: np.ndarray


class _Mirror:
    """The candidate mirror files: their digest tables (memory-mapped) and footers."""

    def __init__(
        self, files: Sequence[MirrorFile], tables: Sequence[Path], crcs: Sequence[Path]
    ) -> None:
        self.files = files
        self.tables = [_digest_table(path) for path in tables]
        self.crcs = crcs

    def metadata(self, number: int) -> pq.FileMetaData:
        """The footer of candidate file `number` (read once per file version)."""
        return _metadata(self.files[number].path)

    def place(self, hashes: np.ndarray, start: int = 0) -> _Placed:
        """Where each uuid hash is: the first file whose table holds it (-1: none), searching
        from file `start` on, then the files before it, and there its first entry's row and
        the range of its entries.

        A slice is in mirror order, so `start` (the file of the rows before) and the next
        file hold a row group's rows: searching every file from the first for each row group
        cost a slice of F files ~F/2 searches a row group (~15 minutes of CPU for the real
        `kingdom=Animalia`). The hashes are sorted once for all the files searched."""
        placed = _Placed(*(np.zeros(hashes.size, dtype=np.int64) for _ in range(4)))
        placed.owner[:] = -1
        order = np.argsort(hashes)
        wanted = hashes[order]
        todo = np.arange(hashes.size)  # places in `wanted` not found yet: still sorted
        for number in [*range(start, len(self.tables)), *range(min(start, len(self.tables)))]:
            if not todo.size:
                break
            table = self.tables[number]
            low, high = _sorted_ranges(table[0], wanted[todo])
            found = high > low
            hit = order[todo[found]]
            placed.owner[hit], placed.row[hit] = number, table[2][low[found]]
            placed.low[hit], placed.high[hit] = low[found], high[found]
            todo = todo[~found]
        return placed

    def same_digests(self, placed: _Placed, digests: np.ndarray) -> np.ndarray:
        """Whether each placed row's digest is the one its hash's entry holds: among entries
        sharing a hash (a 64-bit collision), the one with the same digest if any, whose row
        then replaces `placed.row`'s."""
        same = np.zeros(digests.size, dtype=bool)
        for number in np.unique(placed.owner[placed.owner >= 0]).tolist():
            table = self.tables[number]
            at = np.flatnonzero(placed.owner == number)
            low, high = placed.low[at], placed.high[at]
            same[at] = table[1][low] == digests[at]
            for k in np.flatnonzero((high - low > 1) & ~same[at]).tolist():
                for entry in range(int(low[k]) + 1, int(high[k])):
                    if table[1][entry] == digests[at[k]]:
                        placed.row[at[k]], same[at[k]] = table[2][entry], True
                        break
        return same

    def whole_group(self, owner: np.ndarray, row: np.ndarray) -> np.ndarray | None:
        """The kept chunk crcs (`chunk_crcs`) of the mirror row group whose rows these are, all
        of them in order, if so."""
        if not owner.size or owner[0] < 0 or (owner != owner[0]).any():
            return None
        if not (row == row[0] + np.arange(row.size)).all():
            return None
        meta = self.metadata(int(owner[0]))
        starts = row_group_starts(meta)
        group = int(np.searchsorted(starts, row[0], side="right")) - 1
        if starts[group] != row[0] or meta.row_group(group).num_rows != row.size:
            return None
        kept = _crc_table(self.crcs[int(owner[0])])
        return kept[group] if group < len(kept) else None


@per_file_version(maxsize=64)
def _digest_table(path: Path) -> np.ndarray:
    """A digest table, memory-mapped once per file version: a rank pass checks thousands of
    slices against the same few. Seen as a plain array (the same pages, which it keeps
    mapped): `np.memmap` runs Python on every index taken, ~half the lookups' time."""
    return np.asarray(kept_array(path))


@per_file_version(maxsize=64)
def _crc_table(path: Path) -> np.ndarray:
    """A mirror file's kept chunk crcs, read once per file version."""
    return chunk_crcs.load(path)


@per_file_version(maxsize=64)
def _metadata(path: Path) -> pq.FileMetaData:
    """A mirror file's footer as pyarrow reads it, once per file version."""
    return pq.read_metadata(path)


def _sorted_ranges(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """searchsorted left and right of the sorted needles `wanted` in `keys` (on a memory map,
    searching in order touches each page once instead of at random). The right end is searched
    for only where the key after a found one is the same (a hash held twice: almost never);
    elsewhere it is the next index, or the left end for a needle not found."""
    left = np.searchsorted(keys, wanted, side="left")
    right = left + _equal_at(keys, left, wanted)
    again = np.flatnonzero(_equal_at(keys, right, wanted) & (right > left))
    right[again] = np.searchsorted(keys, wanted[again], side="right")
    return left, right


def _equal_at(keys: np.ndarray, at: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Whether `keys[at]` is `wanted`, element by element (False past the end)."""
    equal = np.zeros(at.size, dtype=bool)
    inside = np.flatnonzero(at < keys.size)
    equal[inside] = keys[at[inside]] == wanted[inside]
    return equal


def _same_chunks(path: Path, ours: pq.RowGroupMetaData, kept: np.ndarray) -> bool:
    """Whether the `uuid` and `emb` column chunks of a slice row group are, by length and
    crc32, the mirror chunks the gate read (`kept`: their (offset, length, crc) rows)."""
    with open(path, "rb") as handle:
        for column, (_, length, crc) in zip(chunk_crcs.COLUMNS, kept.tolist(), strict=True):
            mine = chunk_crcs.chunk_range(ours, column)
            if mine is None or mine[1] != length:
                return False
            if chunk_crcs.crc_of(handle, *mine) != crc:
                return False
    return True


@dataclass
class _Verdict:
    """The comparison so far: rows seen, the last (file, row) place, the first fault;
    `uuid_at` names the uuid at a row of the row group being added."""

    compared: int = 0
    differing: int = 0
    last: tuple[int, int] = (-1, -1)
    first: dict[str, Any] | None = None
    faults: dict[str, int] = field(default_factory=dict)
    uuid_at: Callable[[int], str | None] = lambda row: None

    def add(self, owner: np.ndarray, row: np.ndarray, same: np.ndarray) -> None:
        kinds = _faults(owner, row, same, self.last)
        for kind in ("missing", "emb", "order"):
            count = int((kinds == kind).sum())
            if count:
                self.faults[kind] = self.faults.get(kind, 0) + count
        bad = np.flatnonzero(kinds != "")
        self.differing += bad.size
        if bad.size and self.first is None:
            self._first(int(bad[0]), str(kinds[int(bad[0])]))
        if len(owner):
            self.last = (int(owner[-1]), int(row[-1]))
        self.compared += len(owner)

    def fault_all(self, rows: int, kind: str) -> None:
        if rows:
            self.differing += rows
            self.faults[kind] = self.faults.get(kind, 0) + rows
            if self.first is None:
                self._first(0, kind)
        self.compared += rows

    def _first(self, at: int, kind: str) -> None:
        self.first = {"row": self.compared + at, "uuid": self.uuid_at(at), "fault": kind}

    def result(self, key: SliceKey) -> CheckResult:
        details: dict[str, Any] = {
            "rows_compared": self.compared,
            "rows_differing": self.differing,
            "faults": self.faults,
        }
        if self.first is None:
            return CheckResult(
                EMB_MATCHES_MIRROR,
                True,
                f"slice {key.name}: all {self.compared:,} rows are the mirror's, in its order, "
                "with the same emb bytes",
                details,
            )
        details["first"] = self.first
        return CheckResult(
            EMB_MATCHES_MIRROR,
            False,
            f"slice {key.name}: {_describe(self.first)} ({self.differing:,} of "
            f"{self.compared:,} rows differ): the slice writer produced wrong rows; it was not "
            "published. Rebuild it, and report this if it happens again",
            details,
        )


def _faults(
    owner: np.ndarray, row: np.ndarray, same: np.ndarray, last: tuple[int, int]
) -> np.ndarray:
    """Each row's fault ("" for none): not in the mirror ("missing"), other `emb` bytes
    ("emb"), or not after the previous row in mirror order ("order")."""
    previous_owner = np.concatenate([[last[0]], owner[:-1]])
    previous_row = np.concatenate([[last[1]], row[:-1]])
    ordered = (owner > previous_owner) | ((owner == previous_owner) & (row > previous_row))
    return np.select([owner < 0, ~same, ~ordered], ["missing", "emb", "order"], default="")


def _describe(first: dict[str, Any]) -> str:
    row, uuid = f"{first['row']:,}", first["uuid"]
    return {
        "missing": f"row {row} is uuid {uuid}, which no mirror file of the taxon holds",
        "emb": f"emb of uuid {uuid} (row {row}) differs from the mirror's",
        "order": f"row {row} (uuid {uuid}) is out of the mirror's order",
        "type": f"emb of row {row} is not a fixed-size list of floats",
        "decode": f"emb of the row group holding row {row} (uuid {uuid}) does not decode",
    }[first["fault"]]

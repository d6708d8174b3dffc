"""Embedding integrity: a digest of every row's `emb` kept per file, and per-row plausibility.

"finite" alone let a byte flipped inside an `emb` page through (a value moved from 2.09 to
82.5). Two gate checks close that:

- `emb_unchanged_for_existing_uuids`: each validated file keeps, under
  `Layout.derived_dir(config, sha256)`, its rows' uuid hashes (DuckDB's, as `uuid_index`) sorted,
  each with a 64-bit digest of the row's `emb` bytes. The digests are computed in the gate's one
  pass over `emb` (vectorised, ~5 ms per 10k rows), so a resync compares only the files it
  fetched with the files of the last validated generation they replace, by uuid: the cost follows
  the change, not the mirror. A hit is confirmed on the uuid strings and the bytes themselves
  before anything is reported.
- `emb_norms_within_bounds`: each row's L2 norm and largest |x| lie within the bounds the
  contract pins for the config (`schema.EMB_BOUNDS`).

The digest is a multilinear hash: sum over the row's 32-bit words w_k of m_k * w_k mod 2**64,
with fixed odd multipliers m_k (splitmix64 of k, so it never depends on a library's random
stream). Changing any one word by d != 0 (any single bit flip, any one value) changes the digest
by m_k * d != 0 mod 2**64, so such a change is always seen; changes to several words cancel out
with probability about 2**-32.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.schema import EmbBounds
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import derived_path
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import (
    EMB_NORMS_WITHIN_BOUNDS,
    EMB_UNCHANGED_FOR_EXISTING_UUIDS,
    CheckResult,
)
from tol_dagster.validation.uuid_index import rows_with_hashes, uuid_row_hashes

#: The digest's definition (v1: multilinear over 32-bit words) and DuckDB's uuid hash version.
#: v2: rows are (uuid hash, digest, row in the file); a NULL `emb` has its own digest.
DIGESTS_NAME = f"emb_digests.v2.duckdb-{duckdb.__version__}.npy"

#: The digest of a NULL `emb` (a zero vector's digest is 0).
NULL_DIGEST = np.uint64(2**64 - 1)

#: Rows decoded at once when digests are computed outside the gate's pass.
BATCH_ROWS = 10_000

#: Digest mismatches held per (old file, new file) pair for confirmation.
MAX_CONFIRMED = 100

#: Rows listed in a failure's message and details.
MAX_NAMED = 5
MAX_REPORTED = 20

#: Changed files' rows compared at once; more are split into uuid-hash ranges (~24 bytes each).
MAX_GROUP_ROWS = 16_000_000


# --- per row ---------------------------------------------------------------------------------


def emb_matrix(emb: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The rows of a `fixed_size_list<float>` array as a (rows, dim) numpy view, zero-copy.

    None when `emb` is not a fixed-size list of floats (the schema check reports that file).
    Rows that are NULL hold whatever the buffer holds: mask them with `emb.is_valid()`.
    """
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    if not pa.types.is_fixed_size_list(emb.type) or not pa.types.is_floating(emb.type.value_type):
        return None
    dim = emb.type.list_size
    dtype = np.dtype(emb.type.value_type.to_pandas_dtype())
    if len(emb) == 0 or dim == 0:
        return np.empty((len(emb), dim), dtype)
    child = emb.values  # the whole child: `emb.offset` is not applied to it
    start = (child.offset + emb.offset * dim) * dtype.itemsize
    flat = np.frombuffer(child.buffers()[1], dtype, count=len(emb) * dim, offset=start)
    return flat.reshape(len(emb), dim)


@functools.lru_cache(maxsize=8)
def _multipliers(count: int) -> np.ndarray:
    """`count` fixed odd 64-bit multipliers: splitmix64 of 1..count, lowest bit set."""
    with np.errstate(over="ignore"):
        z = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).astype(
            np.uint64
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z | np.uint64(1)


def row_digests(matrix: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A uint64 digest of each row's bytes (see the module's docstring); NULL rows get
    `NULL_DIGEST`, so a NULL never passes for a vector of zeros."""
    rows = matrix.shape[0]
    width = matrix.shape[1] * matrix.dtype.itemsize if matrix.ndim == 2 else 0
    if rows == 0 or width == 0:
        digests = np.zeros(rows, np.uint64)
        if valid is not None:
            digests[~valid] = NULL_DIGEST
        return digests
    words = np.ascontiguousarray(matrix).view(np.uint32 if width % 4 == 0 else np.uint16)
    with np.errstate(over="ignore"):
        # einsum multiplies and sums in uint64 without first widening every word (2x faster)
        digests = np.einsum(
            "ij,j->i", words, _multipliers(words.shape[1]), dtype=np.uint64, casting="unsafe"
        )
    if valid is not None and not valid.all():
        digests[~valid] = NULL_DIGEST
    return digests


@dataclass
class BoundsScan:
    """Rows whose L2 norm or largest |x| fall outside `bounds`, over batches of one file.

    Non-finite rows are left to `emb_finite` and NULL rows are skipped: one fault, one check.
    """

    bounds: EmbBounds
    rows: int = 0
    outside: int = 0
    examples: list[tuple[int, float, float]] = field(default_factory=list)  # row, norm, max|x|
    norm_range: tuple[float, float] = (float("inf"), float("-inf"))
    max_abs_seen: float = 0.0

    def add(self, matrix: np.ndarray, valid: np.ndarray | None, first_row: int) -> None:
        values = matrix.astype(np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", values, values))
        peaks = np.maximum(values.max(axis=1), -values.min(axis=1)) if values.shape[1] else norms
        seen = np.isfinite(norms) & np.isfinite(peaks)
        if valid is not None:
            seen &= valid
        self.rows += len(norms)
        if seen.any():
            low, high = float(norms[seen].min()), float(norms[seen].max())
            self.norm_range = (min(self.norm_range[0], low), max(self.norm_range[1], high))
            self.max_abs_seen = max(self.max_abs_seen, float(peaks[seen].max()))
        bounds = self.bounds
        bad = seen & (
            (norms < bounds.norm_min) | (norms > bounds.norm_max) | (peaks > bounds.max_abs)
        )
        if not bad.any():
            return
        where = np.flatnonzero(bad)
        self.outside += where.size
        for index in where[: max(0, MAX_REPORTED - len(self.examples))].tolist():
            self.examples.append((first_row + index, float(norms[index]), float(peaks[index])))


def bounds_result(
    name: str, scan: BoundsScan, uuid_at: dict[int, str | None] | None
) -> CheckResult:
    """`emb_norms_within_bounds` of one file: failing rows named by row, uuid and value."""
    bounds = scan.bounds
    details: dict[str, object] = {
        "bounds": {
            "norm_min": bounds.norm_min,
            "norm_max": bounds.norm_max,
            "max_abs": bounds.max_abs,
        },
        "rows": scan.rows,
        "rows_outside": scan.outside,
        "norm_range_seen": list(scan.norm_range)
        if scan.rows and scan.norm_range[0] <= scan.norm_range[1]
        else None,
        "max_abs_seen": scan.max_abs_seen,
    }
    if not scan.outside:
        return CheckResult(
            EMB_NORMS_WITHIN_BOUNDS,
            True,
            f"{name}: emb of all {scan.rows:,} rows within {bounds.describe()}",
            details,
        )
    named = []
    listed = []
    for row, norm, peak in scan.examples:
        uuid = (uuid_at or {}).get(row)
        listed.append({"row": row, "uuid": uuid, "norm": norm, "max_abs": peak})
        named.append(f"row {row} (uuid {uuid!r}) norm {norm:.4g}, max |x| {peak:.4g}")
    details["outside"] = listed
    return CheckResult(
        EMB_NORMS_WITHIN_BOUNDS,
        False,
        f"{name}: {scan.outside:,} rows have emb outside {bounds.describe()}: "
        + "; ".join(named[:MAX_NAMED])
        + (f"; and {scan.outside - MAX_NAMED:,} more" if scan.outside > MAX_NAMED else "")
        + ": the vectors are corrupt or not this config's model; tell upstream",
        details,
    )


# --- per file: the cached (uuid hash, digest) table ---------------------------------------------


def digests_path(layout: Layout, config: str, file: MirrorFile) -> Path:
    """Where the (uuid hash, emb digest) table of `file` (by its sha256) is kept."""
    return derived_path(layout, config, file, DIGESTS_NAME)


def digest_table(row_hashes: np.ndarray, uuid_valid: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """A (3, rows) uint64 array: the non-NULL uuids' hashes sorted, each row's digest and its
    row in the file below (the slice check finds a slice row's place in the mirror by it)."""
    rows = np.flatnonzero(uuid_valid).astype(np.uint64)
    hashes, values = row_hashes[uuid_valid], digests[uuid_valid]
    order = np.argsort(hashes, kind="stable")
    return np.stack([hashes[order], values[order], rows[order]])


def save_table(path: Path, table: np.ndarray) -> None:
    """Write a digest table atomically (readers never see half of one)."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, table, allow_pickle=False)


def compute_table(path: Path) -> np.ndarray:
    """The digest table of the parquet file at `path`, read in batches (uuid and emb only)."""
    parquet = pq.ParquetFile(path)
    hashes, valid, digests = [], [], []
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["uuid", "emb"]):
        uuids, emb = batch.column(0), batch.column(1)
        matrix = emb_matrix(emb)
        if matrix is None:
            raise ValueError(f"{path}: 'emb' is {emb.type}, not a fixed-size list of floats")
        hashes.append(uuid_row_hashes(uuids))
        valid.append(uuids.is_valid().to_numpy(zero_copy_only=False))
        digests.append(row_digests(matrix, emb.is_valid().to_numpy(zero_copy_only=False)))
    if not hashes:
        return np.empty((3, 0), np.uint64)
    return digest_table(np.concatenate(hashes), np.concatenate(valid), np.concatenate(digests))


def ensure_table(file: MirrorFile, layout: Layout, config: str) -> bool:
    """Make sure `file`'s digest table is cached (e.g. validated by an older version); True if
    it had to be computed."""
    path = digests_path(layout, config, file)
    if path.is_file():
        return False
    save_table(path, compute_table(file.path))
    return True


# --- across generations ------------------------------------------------------------------------


@dataclass
class _Mismatches:
    """Digest mismatches by (old file, new file) index pair, a bounded sample of hashes each."""

    hashes: dict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0

    def add(self, old: int, new_owners: np.ndarray, hashes: np.ndarray) -> None:
        self.count += int(hashes.size)
        for new, h in zip(new_owners.tolist(), hashes.tolist(), strict=True):
            if len(self.hashes[(old, new)]) < MAX_CONFIRMED:
                self.hashes[(old, new)].append(h)


def check_emb_unchanged(
    old: Sequence[MirrorFile],
    new: Sequence[MirrorFile],
    *,
    layout: Layout,
    config: str,
    accepted: bool,
    max_group_rows: int = MAX_GROUP_ROWS,
) -> CheckResult:
    """No uuid of the `old` files (the last validated generation's files this resync replaces
    or removes) comes in the `new` files (those it fetched) with other `emb` bytes.

    Files kept unchanged hold the same bytes, so only these two sets are compared; memory stays
    at one hash range of the new files plus one old file's range.
    """
    check = EMB_UNCHANGED_FOR_EXISTING_UUIDS
    if not old or not new:
        return CheckResult(
            check,
            True,
            f"no fetched file replaces a validated one ({len(new)} fetched, {len(old)} replaced "
            "or removed): no existing row to compare",
            {"fetched": len(new), "replaced": len(old)},
        )
    computed = [f.name for f in (*old, *new) if ensure_table(f, layout, config)]
    old_paths = [digests_path(layout, config, f) for f in old]
    new_paths = [digests_path(layout, config, f) for f in new]
    total_new = sum(np.load(p, mmap_mode="r").shape[1] for p in new_paths)
    ranges = max(1, -(-total_new // max_group_rows))
    bounds = [(k << 64) // ranges for k in range(ranges + 1)]
    mismatches = _Mismatches()
    compared = 0
    for low, high in itertools.pairwise(bounds):
        parts = [_load_range(p, low, high) for p in new_paths]
        hashes = np.concatenate([part[0] for part in parts])
        if hashes.size == 0:
            continue
        digests = np.concatenate([part[1] for part in parts])
        owners = np.repeat(np.arange(len(new), dtype=np.int32), [part.shape[1] for part in parts])
        order = np.argsort(hashes, kind="stable")
        hashes, digests, owners = hashes[order], digests[order], owners[order]
        for index, path in enumerate(old_paths):
            theirs = _load_range(path, low, high)
            position = np.minimum(np.searchsorted(hashes, theirs[0]), hashes.size - 1)
            found = hashes[position] == theirs[0]
            compared += int(found.sum())
            differ = found & (digests[position] != theirs[1])
            if differ.any():
                mismatches.add(index, owners[position[differ]], theirs[0][differ])

    changed = _confirm(old, new, mismatches)
    details: dict[str, object] = {
        "fetched": [f.name for f in new],
        "replaced": [f.name for f in old],
        "computed": computed,
        "existing_uuids_compared": compared,
        "digest_mismatches": mismatches.count,
        "changed": changed[:MAX_REPORTED],
        "accepted": accepted,
    }
    if not changed:
        return CheckResult(
            check,
            True,
            f"{compared:,} existing uuids in {len(new)} fetched file(s) keep their emb bytes",
            details,
        )
    named = "; ".join(
        f"{c['file']}: uuid {c['uuid']!r} (row {c['row']}; was row {c['old_row']} of "
        f"{c['old_file']})"
        for c in changed[:MAX_NAMED]
    )
    count = max(mismatches.count, len(changed))
    summary = (
        f"{count:,} rows of uuids in the last validated generation come with different emb "
        f"bytes: {named}" + (f"; and {count - MAX_NAMED:,} more" if count > MAX_NAMED else "")
    )
    if accepted:
        return CheckResult(check, True, f"accepted (--accept-emb-change): {summary}", details)
    return CheckResult(
        check,
        False,
        f"{summary}. If upstream re-embedded these rows on purpose, rerun with --accept-emb-change",
        details,
    )


def _load_range(path: Path, low: int, high: int) -> np.ndarray:
    """The table's columns whose uuid hash is in [low, high) (`high` may be 2**64), copied so
    the memory map closes on return."""
    table = np.load(path, mmap_mode="r")
    keys = table[0]
    start = int(np.searchsorted(keys, np.uint64(low)))
    stop = keys.size if high >= 1 << 64 else int(np.searchsorted(keys, np.uint64(high)))
    return np.array(table[:, start:stop])


def _confirm(
    old: Sequence[MirrorFile], new: Sequence[MirrorFile], mismatches: _Mismatches
) -> list[dict[str, object]]:
    """The mismatches that are real: the same uuid string in both files, different bytes."""
    changed: list[dict[str, object]] = []
    for (a, b), hashes in sorted(mismatches.hashes.items()):
        old_rows = {uuid: row for row, uuid in rows_with_hashes(old[a].path, hashes)}
        new_rows = {uuid: row for row, uuid in rows_with_hashes(new[b].path, hashes)}
        common = sorted(set(old_rows) & set(new_rows), key=lambda u: new_rows[u])
        if not common:
            continue
        old_bytes = emb_bytes(old[a].path, [old_rows[u] for u in common])
        new_bytes = emb_bytes(new[b].path, [new_rows[u] for u in common])
        for uuid in common:
            if old_bytes[old_rows[uuid]] != new_bytes[new_rows[uuid]]:
                changed.append(
                    {
                        "uuid": uuid,
                        "file": new[b].name,
                        "row": new_rows[uuid],
                        "old_file": old[a].name,
                        "old_row": old_rows[uuid],
                    }
                )
    return changed


def emb_bytes(path: Path, rows: Sequence[int]) -> dict[int, bytes | None]:
    """The raw `emb` bytes of `rows` of the parquet file at `path` (None for a NULL row),
    reading only the row groups that hold them."""
    parquet = pq.ParquetFile(path)
    starts = np.cumsum(
        [0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    )
    by_group: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_group[int(np.searchsorted(starts, row, side="right")) - 1].append(row)
    found: dict[int, bytes | None] = {}
    for group, wanted in sorted(by_group.items()):
        emb = parquet.read_row_group(group, columns=["emb"]).column("emb").combine_chunks()
        matrix = emb_matrix(emb)
        valid = emb.is_valid().to_numpy(zero_copy_only=False)
        for row in wanted:
            local = row - int(starts[group])
            found[row] = matrix[local].tobytes() if matrix is not None and valid[local] else None
    return found

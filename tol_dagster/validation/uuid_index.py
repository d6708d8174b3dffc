"""uuid uniqueness within a file and across a whole config, incrementally.

Each file's uuids are kept as a sorted array of 64-bit hashes (`.npy`, ~2.8 MB per 350k rows)
under `Layout.derived_dir(config, sha256)`: keyed by content, so an unchanged file is never
hashed again. A resync compares only the changed files' hashes with every other file's, a hash
range at a time, so memory stays bounded (about `max_group_hashes` x 28 bytes plus one file's
array) whatever the number of files. 64-bit hashes can collide at 233M rows, so every hash hit
is confirmed with the uuid strings themselves before anything is reported.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.file_cache import derived_path, read_kept
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import UUID_UNIQUE, CheckResult

#: DuckDB's `hash` may change between versions: the version is part of the cache's name.
HASHES_NAME = f"uuid_hashes.duckdb-{duckdb.__version__}.npy"

#: Changed files' hashes held at once; more are split into hash ranges (~28 bytes each).
MAX_GROUP_HASHES = 16_000_000

#: Hash hits confirmed per pair of files; a duplicated file does not need millions to be told.
MAX_CONFIRMED = 1000

#: Duplicates listed in a failure's details.
MAX_REPORTED = 20


def uuid_hashes(uuids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The sorted uint64 hashes of the non-NULL `uuids` (DuckDB's vectorized string hash)."""
    valid = np.asarray(uuids.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    hashes = uuid_row_hashes(uuids)[valid]
    hashes.sort()
    return hashes


def uuid_row_hashes(uuids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The uint64 hash of each uuid in row order (DuckDB keeps insertion order); NULL rows get
    a hash too: mask them with `uuids.is_valid()`. On the process's shared database: opening one
    per call cost 20 ms, ten times the hashing of 10k uuids. One query on the table found by
    its Python name (DuckDB's replacement scan): half the fixed cost of a relation built with
    `from_arrow`, which a gate of many small files paid per file."""
    uuid_table = pa.table({"uuid": uuids})  # noqa: F841  (read by the query below, by name)
    with duck.cursor() as con:
        hashes = con.execute("SELECT hash(uuid) AS h FROM uuid_table").fetchnumpy()["h"]
    return np.asarray(hashes, dtype=np.uint64)


def hashes_path(layout: Layout, config: str, file: MirrorFile) -> Path:
    """Where the sorted uuid hashes of `file` (by its sha256) are kept."""
    return derived_path(layout, config, file, HASHES_NAME)


def save_hashes(path: Path, hashes: np.ndarray, *, sync_dir: bool = True) -> None:
    """Write `hashes` to `path` atomically (readers never see half an array); `sync_dir` as
    for `atomic_path`."""
    with atomic_path(path, sync_dir=sync_dir) as temp, open(temp, "wb") as handle:
        np.save(handle, hashes, allow_pickle=False)


def ensure_hashes(file: MirrorFile, layout: Layout, config: str) -> bool:
    """Make sure `file`'s hashes are cached, reading only its uuid column; True if computed.
    Not from bytes hashed first, as the emb digests are (`emb_digests.ensure_table`): a new
    DuckDB recomputes every file's hashes, and hashing the files would read the whole mirror
    for what only finds duplicates (the audit names a file that changed on disk)."""
    path = hashes_path(layout, config, file)
    if path.is_file():
        return False
    save_hashes(path, uuid_hashes(pq.read_table(file.path, columns=["uuid"]).column("uuid")))
    return True


def rows_with_hashes(path: Path, hashes: Iterable[int]) -> list[tuple[int, str]]:
    """(row number, uuid) of the rows of `path` whose uuid hashes to one of `hashes`."""
    wanted = [int(h) for h in hashes]
    if not wanted:
        return []
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT file_row_number, uuid FROM read_parquet(?, file_row_number = true) "
            "WHERE hash(uuid) IN (SELECT unnest(?::UBIGINT[])) ORDER BY file_row_number",
            [str(path), wanted],
        ).fetchall()
    return [(int(row), str(uuid)) for row, uuid in rows]


def check_uuid_unique_within(name: str, path: Path, hashes: np.ndarray) -> CheckResult:
    """No uuid twice in one file; `hashes` are the file's sorted hashes (see `uuid_hashes`)."""
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    by_uuid: dict[str, list[int]] = defaultdict(list)
    for row, uuid in rows_with_hashes(path, repeated[:MAX_CONFIRMED]):
        by_uuid[uuid].append(row)
    duplicates = [{"uuid": uuid, "rows": rows} for uuid, rows in by_uuid.items() if len(rows) > 1]
    if not duplicates:
        return CheckResult(
            UUID_UNIQUE,
            True,
            f"{name}: {hashes.size:,} uuids, all distinct",
            {"uuids": hashes.size},
        )
    first = duplicates[0]
    rows_text = " and ".join(str(r) for r in first["rows"][:5])
    return CheckResult(
        UUID_UNIQUE,
        False,
        f"{name}: uuid {first['uuid']!r} appears more than once (rows {rows_text}); "
        f"{len(duplicates):,} duplicated uuid(s) confirmed of {repeated.size:,} repeated hashes",
        {
            "duplicates": duplicates[:MAX_REPORTED],
            "duplicated_uuids_confirmed": len(duplicates),
            "repeated_hashes": int(repeated.size),
        },
    )


@dataclass
class _Hits:
    """Hash hits between pairs of files (by index), a bounded sample of hashes per pair."""

    hashes: dict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0

    def add(self, hashes: np.ndarray, owners_a: np.ndarray, owners_b: np.ndarray | int) -> None:
        self.count += int(hashes.size)
        owners_b = np.broadcast_to(owners_b, hashes.shape)
        for h, a, b in zip(hashes.tolist(), owners_a.tolist(), owners_b.tolist(), strict=True):
            pair = (min(a, b), max(a, b))
            if len(self.hashes[pair]) < MAX_CONFIRMED:
                self.hashes[pair].append(h)


def check_uuid_unique_across(
    changed: Collection[str],
    files: Sequence[MirrorFile],
    *,
    layout: Layout,
    config: str,
    max_group_hashes: int = MAX_GROUP_HASHES,
) -> CheckResult:
    """No uuid of a `changed` file appears in another file of `files` (the config's new state).

    Pairs of unchanged files are not compared again: they passed when they were validated.
    Hashes missing from the cache are computed from the file's uuid column first (details
    list which). A failure names a duplicate uuid and both files with its row in each.
    """
    by_name = {file.name: index for index, file in enumerate(files)}
    unknown = sorted(set(changed) - by_name.keys())
    if unknown:
        raise ValueError(f"changed files {unknown} are not among the config's files")
    computed = [file.name for file in files if ensure_hashes(file, layout, config)]
    mine = sorted(by_name[name] for name in changed)
    paths = [hashes_path(layout, config, file) for file in files]
    total_changed = sum(kept_array(paths[i]).size for i in mine)
    ranges = hash_ranges(total_changed, max_group_hashes)
    hits = _Hits()
    for low, high in ranges:
        _add_hits(hits, paths, mine, low, high)
    duplicates = _confirm(files, hits)
    details = {
        "changed": sorted(changed),
        "files": len(files),
        "computed": computed,
        "hash_ranges": len(ranges),
        "hash_hits": hits.count,
        "duplicates": duplicates[:MAX_REPORTED],
    }
    if not duplicates:
        return CheckResult(
            UUID_UNIQUE,
            True,
            f"uuids of {len(mine)} changed file(s) appear in no other of the {len(files)} files",
            details,
        )
    first = duplicates[0]
    return CheckResult(
        UUID_UNIQUE,
        False,
        f"uuid {first['uuid']!r} is in both {first['file_a']} (row {first['row_a']}) and "
        f"{first['file_b']} (row {first['row_b']}); {len(duplicates):,} duplicate(s) confirmed "
        f"between files",
        details,
    )


def _add_hits(hits: _Hits, paths: Sequence[Path], mine: list[int], low: int, high: int) -> None:
    """Hash hits in [low, high) between two changed files (`mine`, indexes into `paths`) and
    between a changed file and any other."""
    parts = [load_hash_range(paths[i], low, high) for i in mine]
    values = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    owners = np.repeat(np.array(mine, dtype=np.int32), [part.size for part in parts])
    order = stable_order(values)
    values, owners = values[order], owners[order]
    del order
    same = (values[1:] == values[:-1]) & (owners[1:] != owners[:-1])
    hits.add(values[1:][same], owners[:-1][same], owners[1:][same])
    if values.size == 0:
        return
    for other in sorted(set(range(len(paths))) - set(mine)):
        theirs = load_hash_range(paths[other], low, high)
        position = np.minimum(np.searchsorted(values, theirs), values.size - 1)
        found = values[position] == theirs
        hits.add(theirs[found], owners[position[found]], other)


def hash_ranges(total: int, max_group: int) -> list[tuple[int, int]]:
    """Ranges [low, high) that cut the 64-bit hash space into equal parts, as many as it takes
    for `total` evenly spread hashes to come about `max_group` at a time (`high` may be 2**64)."""
    ranges = max(1, -(-total // max_group))
    return list(itertools.pairwise((k << 64) // ranges for k in range(ranges + 1)))


def kept_array(path: Path) -> np.ndarray:
    """The array kept at `path`, memory-mapped (`file_cache.read_kept`: removed if damaged)."""
    return read_kept(path, lambda p: np.load(p, mmap_mode="r"))


def load_hash_range(path: Path, low: int, high: int) -> np.ndarray:
    """The part of an array cached at `path` whose uuid hash is in [low, high) (`high` may be
    2**64, the end): sorted hashes, or a table whose first row holds them (`emb_digests`).

    Memory-mapped to read only that range, and copied so the map closes on return: maps
    kept open would count every file's pages in the process's resident memory.
    """
    table = kept_array(path)
    hashes = table if table.ndim == 1 else table[0]
    start = int(np.searchsorted(hashes, np.uint64(low)))
    stop = hashes.size if high >= 1 << 64 else int(np.searchsorted(hashes, np.uint64(high)))
    return np.array(table[..., start:stop])


def _confirm(files: Sequence[MirrorFile], hits: _Hits) -> list[dict[str, object]]:
    """The hash hits that are real: the same uuid string in both files."""
    duplicates: list[dict[str, object]] = []
    for (a, b), hashes in sorted(hits.hashes.items()):
        rows_a = {uuid: row for row, uuid in rows_with_hashes(files[a].path, hashes)}
        for row_b, uuid in rows_with_hashes(files[b].path, hashes):
            if uuid in rows_a:
                duplicates.append(
                    {
                        "uuid": uuid,
                        "file_a": files[a].name,
                        "row_a": rows_a[uuid],
                        "file_b": files[b].name,
                        "row_b": row_b,
                    }
                )
    return duplicates


def stable_order(hashes: np.ndarray) -> np.ndarray:
    """`np.argsort(hashes, kind="stable")`, in a quarter of its time when no two hashes are
    equal (the usual case): numpy's SIMD sort, whose order is then the only one."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    if ordered.size > 1 and (ordered[1:] == ordered[:-1]).any():
        return np.argsort(hashes, kind="stable")
    return order

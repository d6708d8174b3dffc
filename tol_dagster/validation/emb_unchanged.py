"""`emb_unchanged_for_existing_uuids`: no uuid of the last validated generation comes back with
other `emb` bytes.

A resync compares only the files it fetched with the files of the last validated generation
they replace, by uuid, on the digest tables the gate keeps per file (`emb_digests`): the cost
follows the change, not the mirror. A digest mismatch is confirmed on the uuid strings and the
bytes themselves before anything is reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import EMB_UNCHANGED_FOR_EXISTING_UUIDS, CheckResult
from tol_dagster.validation.emb_digests import digests_path, emb_matrix, ensure_table
from tol_dagster.validation.uuid_index import (
    hash_ranges,
    kept_array,
    load_hash_range,
    rows_with_hashes,
    stable_order,
)

#: Digest mismatches held per (old file, new file) pair for confirmation.
MAX_CONFIRMED = 100

#: Rows listed in a failure's message and details.
MAX_NAMED = 5
MAX_REPORTED = 20

#: Changed files' rows compared at once; more are split into uuid-hash ranges (~24 bytes each).
MAX_GROUP_ROWS = 16_000_000


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
    if not old or not new:
        return CheckResult(
            EMB_UNCHANGED_FOR_EXISTING_UUIDS,
            True,
            f"no fetched file replaces a validated one ({len(new)} fetched, {len(old)} replaced "
            "or removed): no existing row to compare",
            {"fetched": len(new), "replaced": len(old)},
        )
    computed = [f.name for f in (*old, *new) if ensure_table(f, layout, config)]
    mismatches, compared = _compare_digests(
        [digests_path(layout, config, f) for f in old],
        [digests_path(layout, config, f) for f in new],
        max_group_rows,
    )
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
    count = max(mismatches.count, len(changed))
    return _verdict(
        changed, count, fetched=len(new), compared=compared, accepted=accepted, details=details
    )


def _compare_digests(
    old_paths: Sequence[Path], new_paths: Sequence[Path], max_group_rows: int
) -> tuple[_Mismatches, int]:
    """The digest mismatches between the old and the new tables, and how many uuids of the old
    ones the new ones hold, one uuid-hash range of the new tables at a time."""
    total_new = sum(kept_array(p).shape[1] for p in new_paths)
    mismatches = _Mismatches()
    compared = 0
    for low, high in hash_ranges(total_new, max_group_rows):
        parts = [load_hash_range(p, low, high) for p in new_paths]
        hashes = np.concatenate([part[0] for part in parts])
        if hashes.size == 0:
            continue
        digests = np.concatenate([part[1] for part in parts])
        owners = np.repeat(
            np.arange(len(new_paths), dtype=np.int32), [part.shape[1] for part in parts]
        )
        order = stable_order(hashes)
        hashes, digests, owners = hashes[order], digests[order], owners[order]
        for index, path in enumerate(old_paths):
            theirs = load_hash_range(path, low, high)
            position = np.minimum(np.searchsorted(hashes, theirs[0]), hashes.size - 1)
            found = hashes[position] == theirs[0]
            compared += int(found.sum())
            differ = found & (digests[position] != theirs[1])
            if differ.any():
                mismatches.add(index, owners[position[differ]], theirs[0][differ])
    return mismatches, compared


def _verdict(
    changed: list[dict[str, object]],
    count: int,
    *,
    fetched: int,
    compared: int,
    accepted: bool,
    details: dict[str, object],
) -> CheckResult:
    """The check's result: `changed` are the confirmed rows, `count` all the rows found changed
    (`accepted`: --accept-emb-change lets them pass)."""
    check = EMB_UNCHANGED_FOR_EXISTING_UUIDS
    if not changed:
        return CheckResult(
            check,
            True,
            f"{compared:,} existing uuids in {fetched} fetched file(s) keep their emb bytes",
            details,
        )
    named = "; ".join(
        f"{c['file']}: uuid {c['uuid']!r} (row {c['row']}; was row {c['old_row']} of "
        f"{c['old_file']})"
        for c in changed[:MAX_NAMED]
    )
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

"""The published slices' audit (`slices_match_catalog`): every slice the catalog lists still
holds the bytes the catalog gives (bit rot, edits in place, deletions).

Downstream code trusts the catalog's sha256 without hashing (`catalog.read_arrow` hashes only
with `verify=True`), so without this a slice whose bytes changed on disk stays published
silently. Two depths, as the mirror's audit: after the catalog is written, each listed slice is
looked for and sized (a stat each); the audit job re-hashes every one. It only reads: a drifted
slice is named with the command that builds it again.

Not drift: a slice published since the catalog was last written (its record gives the bytes
found; the catalog follows its slices by itself), and one whose file was written (its mtime)
after its record and in the last IN_FLIGHT_S (a publish between its rename and its record,
which a rank pass writes a group of slices later; an edit in place waits as long), and one
gone with its record (removed by `slices remove` or a rank pass since the catalog was written;
a slice file deleted alone is drift): the next audit checks those again. A slice a publish
replaced (and recorded) after the audit read it is checked again. Bit rot changes no mtime.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.compute as pc

from tol_dagster import progress
from tol_dagster.errors import LocalStorageError, SliceSpecError
from tol_dagster.slices.catalog_file import read_catalog
from tol_dagster.slices.rank_pass import by_rank_pass
from tol_dagster.slices.records import record_if_key, record_path, slice_file, slice_record_of
from tol_dagster.store.hashing import (
    READ_TRIES,
    file_version,
    replaced_since,
    sha256_of_one_version,
)
from tol_dagster.store.layout import Layout
from tol_dagster.validation.checks import CheckResult

SLICES_AUDIT_CHECK = "slices_match_catalog"
#: The key of the check's details naming the drifted slices (what `mirror_change_sensor` reads).
DRIFTED_SLICES = "drifted_slices"
#: A slice file written after its record and this recently, whose bytes match neither the
#: catalog nor its record, is taken for a publish in flight, not for drift.
IN_FLIGHT_S = 600.0
#: Drifted slices named in the check's message, and listed in its details (the first, by
#: name: the metadata of a check whose every slice drifted must stay small; the sensor rebuilds
#: those listed, the next audit lists the rest).
MAX_NAMED = 10
MAX_LISTED = 1_000
#: The progress task of the audit (the command line's bar): slices looked at, bytes hashed.
AUDIT_TASK = "slices"
#: Catalog rows turned into Python values at a time.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Listed:
    """A slice as the catalog lists it."""

    name: str
    path: Path
    size: int
    sha256: str


#: Slices the catalog lists that are not as it says, but on their way to it: the catalog's next
#: write follows them (details key -> the message's note).
IN_FLIGHT, REMOVED = "in_flight", "removed_since_catalog"
SETTLING = {
    IN_FLIGHT: f"changed in the last {IN_FLIGHT_S:.0f} s, being published",
    REMOVED: "removed since the catalog was written, slice and record",
}


@dataclass(frozen=True)
class Found:
    """What the audit found of one listed slice: `drift` None when its bytes are as published;
    `settling`, a key of SETTLING, when it is on its way to what the catalog's next write says."""

    drift: str | None = None
    settling: str | None = None
    bytes_hashed: int = 0


def audit_slices(layout: Layout, config: str, *, rehash: bool) -> CheckResult:
    """`slices_match_catalog` of `config`: each slice the catalog lists is present with its
    size and, with `rehash`, its sha256. The catalog is read a batch at a time and only what
    is wrong is kept: a rank of 868,000 species is as many rows."""
    try:
        catalog = read_catalog(layout, config)
    except LocalStorageError as error:
        return CheckResult(SLICES_AUDIT_CHECK, False, str(error), {"catalog_reads": False})
    tally = _Tally()
    total = (pc.sum(catalog["bytes"]).as_py() or 0) if rehash else 0
    progress.start(AUDIT_TASK, files=catalog.num_rows, bytes=total, what=config)
    folder = layout.slices_dir(config)  # a catalog written in a home since moved names it
    for batch in catalog.select(["name", "path", "bytes", "sha256"]).to_batches(BATCH_ROWS):
        for name, path, size, sha256 in zip(*batch.to_pydict().values(), strict=True):
            listed = Listed(name, slice_file(folder, name, path), size, sha256)
            tally.add(name, check_slice(layout, config, listed, rehash=rehash))
            progress.advance(AUDIT_TASK, files=1)
    return _result(config, tally, rehash=rehash)


@dataclass
class _Tally:
    """What the audit found over the catalog: counts, and the slices not as published."""

    checked: int = 0
    bytes_hashed: int = 0
    drifted: dict[str, str] = field(default_factory=dict)
    settling: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in SETTLING})

    def add(self, name: str, found: Found) -> None:
        self.checked += 1
        self.bytes_hashed += found.bytes_hashed
        if found.drift is not None:
            self.drifted[name] = found.drift
        if found.settling is not None:
            self.settling[found.settling].append(name)


def check_slice(layout: Layout, config: str, listed: Listed, *, rehash: bool) -> Found:
    """Whether `listed`'s file still holds the bytes the catalog or its record gives. Checked
    again when a publish renamed another file in (and recorded it) after this one was read."""
    for _ in range(READ_TRIES):
        found, read = _check_once(layout, config, listed, rehash=rehash)
        if found.drift is None or read is None or not replaced_since(listed.path, read):
            break
    return found


def _check_once(
    layout: Layout, config: str, listed: Listed, *, rehash: bool
) -> tuple[Found, tuple[int, int, int, int] | None]:
    """The verdict on `listed`'s file, and the version of it read (None: none)."""
    try:
        stat, sha256 = _read(listed.path, rehash=rehash)
    except FileNotFoundError:
        return _unless_republished(layout, config, listed, f"{listed.path} is missing", None), None
    except OSError as error:  # a folder in its place, no permission, an I/O error
        reason = f"does not read ({error})"
        return _unless_republished(layout, config, listed, reason, None), None
    hashed = stat.st_size if sha256 is not None else 0
    if stat.st_size != listed.size:
        reason = f"{stat.st_size:,} bytes on disk, the catalog says {listed.size:,}"
    elif sha256 is not None and sha256 != listed.sha256:
        reason = (
            f"sha256 on disk {sha256[:12]}... differs from the catalog's {listed.sha256[:12]}..."
        )
    else:
        return Found(bytes_hashed=hashed), file_version(stat)
    found = _unless_republished(layout, config, listed, reason, stat, sha256)
    return replace(found, bytes_hashed=hashed), file_version(stat)


def _read(path: Path, *, rehash: bool) -> tuple[os.stat_result, str | None]:
    """The file's status and, with `rehash`, its sha256 (of that same version of it)."""
    if not rehash:
        return path.stat(), None
    return sha256_of_one_version(path, progress.bytes_of(AUDIT_TASK))


def _unless_republished(
    layout: Layout,
    config: str,
    listed: Listed,
    reason: str,
    stat: os.stat_result | None,
    sha256: str | None = None,
) -> Found:
    """Drift for `reason`, unless the slice's record (read after the file) gives what was found,
    or the file changed too recently to tell a publish in flight from an edit, or the slice is
    gone with its record (a rank pass dropped it: the catalog's next write does too)."""
    record_file = _record_file(layout, config, listed.name)
    if record_file is None:
        pass  # a name that no longer parses as a key (made before a rule): no record is kept
    elif stat is None:
        if not record_file.exists():
            return Found(settling=REMOVED)
    else:
        record = slice_record_of(layout, config, listed.name)
        if _recorded(record, stat.st_size, sha256):
            return Found()
        if _in_flight(stat, record_file):
            return Found(settling=IN_FLIGHT)
    return Found(f"{listed.name}: {reason}; {_mend(layout, config, listed.name, record_file)}")


def _mend(layout: Layout, config: str, name: str, record_file: Path | None) -> str:
    """The command that mends drifted slice `name`: its rank's pass for a slice one made (a
    slice built by its own key would also become a partition of its own)."""
    quoted = shlex.quote(name)
    if record_file is None:
        return f"remove it with `tol-dagster slices remove {quoted} --config {config}`"
    made_by = list(by_rank_pass(layout, config, [name]))
    if made_by:
        return f"rebuild it with `tol-dagster slices add-rank {made_by[0]} --config {config}`"
    return f"rebuild it with `tol-dagster slice {quoted} --config {config}`"


def _record_file(layout: Layout, config: str, name: str) -> Path | None:
    """Where slice `name`'s record is kept; None for a name that no longer parses as a key."""
    try:
        return record_path(layout, config, name)
    except SliceSpecError:
        return None


def still_drifted(layout: Layout, config: str, names: Iterable[str]) -> list[str]:
    """Those of `names` whose slice is missing or no longer holds the bytes its record gives
    (re-hashed): drift an audit named and nothing mended since. Names without a record are
    left out (nothing to compare with)."""
    folder, drifted = layout.slices_dir(config), []
    for name in names:
        record = record_if_key(layout, config, name)
        if record is None:
            continue
        try:
            stat, sha256 = sha256_of_one_version(slice_file(folder, name, str(record.get("path"))))
        except OSError:
            drifted.append(name)
            continue
        if not _recorded(record, stat.st_size, sha256):
            drifted.append(name)
    return drifted


def _recorded(record: dict[str, object] | None, size: int, sha256: str | None) -> bool:
    """Whether the slice's record gives `size` bytes and `sha256` (None: not hashed)."""
    if record is None or record.get("bytes") != size:
        return False
    return sha256 is None or record.get("sha256") == sha256


def _in_flight(stat: os.stat_result, record: Path) -> bool:
    """Whether the slice file was written after its record, and recently: a publish whose
    record is still to come (a finished publish writes the record last)."""
    try:
        recorded = record.stat().st_mtime
    except FileNotFoundError:
        recorded = float("-inf")
    return stat.st_mtime > recorded and time.time() - stat.st_mtime < IN_FLIGHT_S


def _result(config: str, tally: _Tally, *, rehash: bool) -> CheckResult:
    names = sorted(tally.drifted)
    scope = "every slice re-hashed" if rehash else "every slice looked for and sized"
    details: dict[str, object] = {
        "scope": scope,
        "slices_checked": tally.checked,
        "bytes_hashed": tally.bytes_hashed,
        "drifted_count": len(names),
        DRIFTED_SLICES: names[:MAX_LISTED],
        "drifted": [tally.drifted[name] for name in names[:MAX_LISTED]],
        **{kind: sorted(found)[:MAX_LISTED] for kind, found in tally.settling.items()},
    }
    note = "".join(
        f"; {len(found):,} {SETTLING[kind]} (checked again at the next audit)"
        for kind, found in tally.settling.items()
        if found
    )
    if names:
        named = [tally.drifted[name] for name in names[:MAX_NAMED]]
        more = f"; and {len(names) - MAX_NAMED:,} more" if len(names) > MAX_NAMED else ""
        message = (
            f"{len(names):,} of {tally.checked:,} published slices of {config} no longer hold "
            "the bytes the catalog gives: " + "; ".join(named) + more + note
        )
        return CheckResult(SLICES_AUDIT_CHECK, False, message, details)
    message = f"{tally.checked:,} published slices of {config} match the catalog ({scope}){note}"
    return CheckResult(SLICES_AUDIT_CHECK, True, message, details)

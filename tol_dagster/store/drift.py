"""Drift: published files that no longer hold the bytes the manifest says (bit rot, edits in
place, deletions, files added by hand).

Two depths of the same comparison: `audit_mirror` re-hashes every file (the audit, minutes on
the real data); `drifted_entries` stats every file and re-hashes only the ones named (the
resync, before it plans: a missing file or a wrong size costs a stat to find). Both only read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from tol_dagster import progress
from tol_dagster.store.generations import current_generation
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, ManifestEntry

#: The progress task of the mirror's audit (the command line's bar): files looked at, bytes
#: hashed.
AUDIT_TASK = "mirror"


@dataclass(frozen=True)
class Drift:
    name: str  # a file name, or `mirror/<config>` for the mirror as a whole
    reason: str


@dataclass(frozen=True)
class AuditReport:
    config: str
    generation: Path | None
    files_checked: int
    bytes_hashed: int
    drifted: tuple[Drift, ...]

    @property
    def ok(self) -> bool:
        return not self.drifted


def _missing(generation: Path, entry: ManifestEntry) -> Drift | None:
    if (generation / entry.name).is_file():
        return None
    return Drift(entry.name, f"missing from {generation}")


def _resized(generation: Path, entry: ManifestEntry) -> Drift | None:
    size = (generation / entry.name).stat().st_size
    if size == entry.size:
        return None
    return Drift(entry.name, f"{size} bytes on disk, the manifest says {entry.size}")


def _rehashed(generation: Path, entry: ManifestEntry) -> Drift | None:
    digest = sha256_file(generation / entry.name, progress.bytes_of(AUDIT_TASK))
    if digest == entry.sha256:
        return None
    return Drift(
        entry.name,
        f"sha256 on disk {digest} differs from the manifest's {entry.sha256} "
        "(bit rot or an edit in place); fetch it again from upstream",
    )


def drifted_entries(
    generation: Path | None, entries: Iterable[ManifestEntry], *, rehash: Collection[str] = ()
) -> list[Drift]:
    """The `entries` whose file in `generation` is missing or has another size (one stat
    each), or, for the names in `rehash` only, other bytes (hashed). No generation: all missing."""
    drifted = []
    for entry in entries:
        if generation is None:
            drifted.append(Drift(entry.name, "no generation is published"))
            continue
        drift = _missing(generation, entry) or _resized(generation, entry)
        if drift is None and entry.name in rehash:
            drift = _rehashed(generation, entry)
        if drift is not None:
            drifted.append(drift)
    return drifted


def audit_mirror(
    layout: Layout,
    config: str,
    manifest: Manifest,
    *,
    generation: Path | None = None,
    only: Collection[str] | None = None,
) -> AuditReport:
    """Re-hash every published file against the manifest: bit rot, edits, missing or extra files.

    `generation`: the folder to hash, resolved once by the caller (default: the current one),
    so a publish during the minutes of hashing cannot switch files under the audit. `only`:
    re-hash just these names (the files a resync just published); every file is still looked
    for and its size compared, which costs a stat."""
    mirror_name = f"mirror/{config}"
    if generation is None:
        generation = current_generation(layout, config)
    drifted: list[Drift] = []
    if generation is None or not generation.is_dir():
        where = "nothing" if generation is None else f"{generation}, which is missing"
        drifted.append(Drift(mirror_name, f"the mirror points at {where}; run `tol-dagster sync`"))
        return AuditReport(config, generation, 0, 0, tuple(drifted))
    if generation.name != manifest.generation:
        drifted.append(
            Drift(
                mirror_name,
                f"the mirror shows generation {generation.name} but the manifest describes "
                f"{manifest.generation}; run `tol-dagster sync` to reconcile them",
            )
        )
    checked = hashed = 0
    to_hash = [e for e in manifest.entries if only is None or e.name in only]
    progress.start(
        AUDIT_TASK,
        files=len(manifest.entries),
        bytes=sum(e.size for e in to_hash),
        what=config,
    )
    for entry in manifest.entries:
        drift = _missing(generation, entry)
        if drift is None:
            checked += 1
            drift = _resized(generation, entry)
        if drift is None and (only is None or entry.name in only):
            hashed += entry.size
            drift = _rehashed(generation, entry)
        if drift is not None:
            drifted.append(drift)
        progress.advance(AUDIT_TASK, files=1)
    known = set(manifest.by_name)
    for path in sorted(generation.iterdir()):
        if path.name not in known:
            drifted.append(
                Drift(path.name, f"in {generation} but not in the manifest (added by hand?)")
            )
    return AuditReport(config, generation, checked, hashed, tuple(drifted))

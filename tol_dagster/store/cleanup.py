"""Cleanup: remove what nothing needs any more (superseded generations, old staging, unwanted
partials, old quarantine, old runs' step outputs, temp files) and the per-file results of
contents no longer kept."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX, is_temp_of
from tol_dagster.store.generations import (
    current_generation,
    generation_number,
    numbered_generations,
    previous_generation,
)
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest
from tol_dagster.store.pins import generation_files_on_disk, read_record, record_path, unleased
from tol_dagster.store.quarantine import list_quarantine, reason_path
from tol_dagster.store.removal import children, remove_tree
from tol_dagster.store.staging import staging_root


@dataclass(frozen=True)
class CleanupReport:
    generations: tuple[Path, ...] = ()
    staging: tuple[Path, ...] = ()
    partials: tuple[Path, ...] = ()
    quarantined: tuple[Path, ...] = ()
    steps: tuple[Path, ...] = ()
    temporary: tuple[Path, ...] = ()
    bytes_freed: int = 0

    @property
    def removed(self) -> tuple[Path, ...]:
        return (
            *self.generations,
            *self.staging,
            *self.partials,
            *self.quarantined,
            *self.steps,
            *self.temporary,
        )


@dataclass
class _Removal:
    """Collects what a cleanup removed, by kind, and the bytes it freed."""

    removed: dict[str, list[Path]] = field(default_factory=dict)
    bytes_freed: int = 0

    def remove(self, kind: str, path: Path) -> None:
        self.bytes_freed += remove_tree(path)
        self.removed.setdefault(kind, []).append(path)

    def report(self) -> CleanupReport:
        return CleanupReport(
            **{kind: tuple(paths) for kind, paths in self.removed.items()},
            bytes_freed=self.bytes_freed,
        )


def _published_at(layout: Layout, config: str, path: Path) -> float:
    """When `path` was published: its record says, else its folder's last change (the links
    added just before the switch)."""
    record = read_record(layout, config, path.name)
    return record.published_at if record is not None else path.stat().st_mtime


def _superseded(layout: Layout, config: str) -> list[tuple[Path, float | None]]:
    """Every generation but the current, with when it stopped being current: when the next
    one on disk was published (later than the truth if that one is gone: keeps longer). None
    for a generation built after the current one and never published (a crash's leftover)."""
    current = current_generation(layout, config)
    current_number = None if current is None else generation_number(current)
    found: list[tuple[Path, float | None]] = []
    generations = numbered_generations(layout, config)
    for i, (number, path) in enumerate(generations):
        if path == current:
            continue
        if current_number is None or number > current_number:
            found.append((path, None))
            continue
        successor = generations[i + 1][1]
        found.append((path, _published_at(layout, config, successor)))
    return found


def _is_temp(path: Path) -> bool:
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def cleanup(
    layout: Layout,
    config: str,
    *,
    keep_commit: str | None,
    wanted_sha256s: Collection[str],
    grace_s: float,
    quarantine_max_age_days: float | None = 30.0,
    steps_max_age_days: float = 7.0,
    now: datetime | None = None,
) -> CleanupReport:
    """Remove what nothing needs any more and report the bytes freed (hard links counted once).

    Removed: generations other than the current, the previous and the manifest's, once
    superseded for `grace_s` (the caller reads TOL_GENERATION_GRACE_S) and pinned by no run;
    staging of commits other than `keep_commit`; partials whose sha256 is not in
    `wanted_sha256s`; quarantined files older than `quarantine_max_age_days` (None keeps them);
    what runs' steps passed each other, untouched for `steps_max_age_days` (kept that long so
    a failed run can be re-executed from its failure); temp files that interrupted writes left
    (`_remove_temps`). Call it when no sync of this config is running.
    """
    removal = _Removal()
    moment = (now or datetime.now(UTC)).timestamp()
    manifest = load_manifest(layout, config)
    keep = {current_generation(layout, config), previous_generation(layout, config)}
    if manifest is not None:
        keep.add(layout.generations_dir(config) / manifest.generation)
    for path, superseded_at in _superseded(layout, config):
        if path in keep or (superseded_at is not None and moment - superseded_at < grace_s):
            continue
        with unleased(layout, config, path.name) as free:
            if free:
                removal.remove("generations", path)
                record_path(layout, config, path.name).unlink(missing_ok=True)
    for path in children(staging_root(layout, config)):
        if path.name != keep_commit:
            removal.remove("staging", path)
    wanted = set(wanted_sha256s)
    for path in children(layout.partial_dir(config)):
        if path.name.split(".", 1)[0] not in wanted:
            removal.remove("partials", path)
    if quarantine_max_age_days is not None:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=quarantine_max_age_days)
        for item in list_quarantine(layout, config):
            if item.quarantined_at < cutoff:
                removal.remove("quarantined", item.path)
                if reason_path(item.path).exists():
                    removal.remove("quarantined", reason_path(item.path))
    steps_cutoff = moment - steps_max_age_days * 86400
    for path in children(layout.step_outputs_dir()):
        if path.stat().st_mtime < steps_cutoff:
            removal.remove("steps", path)
    _remove_temps(removal, layout, config, moment)
    return removal.report()


#: A temp file in the published folders untouched this long was left by a killed writer: a
#: live one is writing it, or has it renamed within seconds (a rank pass's deferred renames).
STALE_TEMP_S = 3600.0


def _remove_temps(removal: _Removal, layout: Layout, config: str, moment: float) -> None:
    """Temp files of interrupted writes: all of them where only a sync writes (store,
    quarantine, the mirror's link), the stale ones in the published slices, their records and
    the catalog's folder, which rank passes and single slices write while a sync runs."""
    link = layout.mirror_dir(config)
    for folder in (layout.store_dir(config), layout.quarantine_dir(config), link.parent):
        for path in children(folder):
            if _is_temp(path) and (folder != link.parent or is_temp_of(path, link)):
                removal.remove("temporary", path)
    published = (
        layout.published_dir(config), layout.slices_dir(config), layout.slice_records_dir(config)
    )  # fmt: skip
    for folder in published:
        for path in children(folder):
            if _is_temp(path) and _untouched(path) < moment - STALE_TEMP_S:
                removal.remove("temporary", path)


def _untouched(path: Path) -> float:
    """When `path` was last written; infinitely recent if it is gone (renamed into place)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def prune_derived(layout: Layout, config: str, keep_sha256s: Collection[str]) -> int:
    """Remove per-file results (`derived/<sha256>/`) of contents no generation kept holds;
    returns the bytes freed. Results are keyed by content, so what is kept stays valid.
    Contents of every generation still on disk are kept too: a pinned run may read them."""
    keep = set(keep_sha256s) | generation_files_on_disk(layout, config)
    root = layout.derived_dir(config, "x").parent
    return sum(remove_tree(path) for path in children(root) if path.name not in keep)

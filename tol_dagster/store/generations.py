"""The published mirror and its private store: staging, generations, the atomic switch, cleanup.

Consumers read `<home>/mirror/<config>/*.parquet`. That path is a symlink to one generation
folder `store/<config>/generations/<commit[:12]>-<n>/` holding hard links to verified files, so
publishing a commit is one `rename` of the symlink (readers see the old commit or the new one,
whole) and unchanged files cost no copy. `n` only grows, so generations order by it.

Kept on disk: the current generation and the one published just before it (the revision diff
by uuid after a resync compares the two), plus the one the manifest names if it differs (a crash
between the switch and the manifest save), plus any superseded less than TOL_GENERATION_GRACE_S
ago or pinned by a run still reading it (see `pins`). Everything else is removed by `cleanup`.
Readers of ours pin a generation once per run (`pin_generation`) and never read through the
symlink, which a publish may switch between two files they open.

One writer per config at a time (the resync pool guarantees it); readers may come any time.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tol_dagster.errors import DiskSpaceError, StoreError
from tol_dagster.settings import generation_grace_s
from tol_dagster.store.durable import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    fsync_dir,
    is_temp_of,
    make_public,
    write_atomic,
)
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest, utc_timestamp
from tol_dagster.store.pins import (
    PinnedGeneration,
    generation_files_on_disk,
    read_record,
    record_path,
    take_lease,
    unleased,
    write_record,
)

if TYPE_CHECKING:
    from tol_dagster.store.manifest import Plan

_COMMIT = re.compile(r"^[0-9A-Za-z]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GENERATION = re.compile(r"^[0-9A-Za-z]{1,12}-(?P<n>[0-9]+)$")
REASON_SUFFIX = ".reason.txt"
PARTIAL_SUFFIX = ".part"


# --- names and paths -----------------------------------------------------------------------------
def _check_commit(commit: str) -> str:
    if not _COMMIT.match(commit):
        raise ValueError(f"commit {commit!r} is not a plain alphanumeric revision id")
    return commit


def _check_name(name: str) -> str:
    """A published file name: plain, visible, and a parquet file (the mirror holds nothing else)."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or not name.endswith(".parquet")
    ):
        raise ValueError(
            f"{name!r} is not a plain *.parquet file name; the mirror holds only those"
        )
    return name


def stage_path(layout: Layout, config: str, commit: str, name: str) -> Path:
    """Where a file of `commit` waits once fetched and verified, until its generation is published."""
    return layout.staging_dir(config, _check_commit(commit)) / _check_name(name)


def partial_path(layout: Layout, config: str, sha256: str) -> Path:
    """The stable partial download of a content: same name across processes, so it resumes."""
    if not _SHA256.match(sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex sha256")
    return layout.partial_dir(config) / f"{sha256}{PARTIAL_SUFFIX}"


def _staging_root(layout: Layout, config: str) -> Path:
    """The folder holding one staging folder per commit (Layout names only the per-commit one)."""
    return layout.staging_dir(config, "commit").parent


def staged_files(layout: Layout, config: str, commit: str) -> dict[str, Path]:
    """Files of `commit` already fetched and verified: a retry fetches only the others."""
    folder = layout.staging_dir(config, _check_commit(commit))
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".") and path.name.endswith(".parquet")
    }


def bytes_still_needed(layout: Layout, config: str, plan: Plan) -> int:
    """Bytes `plan` still has to download: staged files and resumable partials do not count,
    nor do unchanged files (publishing hard-links them)."""
    staged = staged_files(layout, config, plan.commit)
    needed = 0
    for remote_file in plan.to_fetch:
        staged_path = staged.get(remote_file.name)
        if staged_path is not None and staged_path.stat().st_size == remote_file.size:
            continue
        partial = partial_path(layout, config, remote_file.sha256)
        have = partial.stat().st_size if partial.is_file() else 0
        needed += max(remote_file.size - have, 0)
    return needed


# --- generations ---------------------------------------------------------------------------------
def _generation_number(path: Path) -> int | None:
    match = _GENERATION.match(path.name)
    return int(match["n"]) if match else None


def _generations(layout: Layout, config: str) -> list[tuple[int, Path]]:
    """Generation folders, oldest first."""
    folder = layout.generations_dir(config)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        number = _generation_number(path)
        if number is not None and path.is_dir() and not path.is_symlink():
            found.append((number, path))
    return sorted(found)


def _hand_made(link: Path) -> StoreError:
    return StoreError(
        f"{link} is a real folder, not the symlink tol-dagster publishes through; refusing to "
        "touch it. Move it elsewhere (it is not managed by tol-dagster) and sync again."
    )


def current_generation(layout: Layout, config: str) -> Path | None:
    """The generation `mirror/<config>` points at (None before the first publish)."""
    link = layout.mirror_dir(config)
    if not link.is_symlink():
        if link.exists():
            raise _hand_made(link)
        return None
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def previous_generation(layout: Layout, config: str) -> Path | None:
    """The generation published just before the current one, if still on disk."""
    current = current_generation(layout, config)
    current_number = None if current is None else _generation_number(current)
    if current_number is None:
        return None
    older = [path for number, path in _generations(layout, config) if number < current_number]
    return older[-1] if older else None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_generation(
    layout: Layout,
    config: str,
    *,
    commit: str,
    files: Mapping[str, Path],
    sha256s: Mapping[str, str] | None = None,
) -> Path:
    """Publish exactly `files` (name -> verified source) as the mirror of `commit`, atomically.

    Builds `generations/<commit[:12]>-<n>/` of hard links (sources: the current generation for
    unchanged files, staging for fetched ones), makes it durable, writes its record (each
    file's sha256: `sha256s`, verified by the caller, else hashed here), then switches the
    symlink in one rename. Files are made read-only: they are shared by every generation that
    holds them. Leftovers of publishes that crashed before their switch are removed after it.
    """
    _check_commit(commit)
    for name in files:
        _check_name(name)
    if sha256s is not None and set(sha256s) != set(files):
        raise ValueError("sha256s must name exactly the files published")
    link = layout.mirror_dir(config)
    old = current_generation(layout, config)  # raises on a hand-made folder, before any change
    old_number = 0 if old is None else (_generation_number(old) or 0)
    existing = _generations(layout, config)
    number = max((n for n, _ in existing), default=0) + 1
    generations = layout.generations_dir(config)
    generations.mkdir(parents=True, exist_ok=True)
    generation = generations / f"{commit[:12]}-{number}"
    generation.mkdir()
    try:
        for name, source in sorted(files.items()):
            _fsync_file(source)
            target = generation / name
            os.link(source, target)
            make_public(target, read_only=True)
        fsync_dir(generation)
        digests = {
            name: sha256s[name] if sha256s is not None else sha256_file(generation / name)
            for name in files
        }
        write_record(layout, config, generation.name, commit, digests, time.time())
        fsync_dir(generations)
        _switch_symlink(link, generation)
    except BaseException:
        _remove_tree(generation)
        record_path(layout, config, generation.name).unlink(missing_ok=True)
        raise
    for n, path in existing:
        if n > old_number:  # built after the old current and never published: a crash's leftover
            _remove_tree(path)
            record_path(layout, config, path.name).unlink(missing_ok=True)
    return generation


def pin_generation(layout: Layout, config: str, *, lease: bool = True) -> PinnedGeneration:
    """The current generation of `config`, resolved once, with its own file -> sha256 map.

    Read only `pin.path`'s files (`pin.mirror_files()`), never the symlink, and key results by
    `pin.files`. With `lease` (use it as a context manager, or `release()`), cleanup keeps the
    generation while the pin is held. A generation published before records existed is paired
    with the manifest only if the manifest names it. Raises `StoreError` before the first sync.
    """
    for _ in range(100):
        current = current_generation(layout, config)
        if current is None:
            raise StoreError(
                f"{config}: no mirror is published under {layout.home} yet; run `tol-dagster "
                f"sync` (or materialize tol/{config}/mirror) first"
            )
        handle = take_lease(layout, config, current.name) if lease else None
        pinned = _pinned(layout, config, current, handle)
        if pinned is not None:
            return pinned
        if handle is not None:
            handle.close()
        time.sleep(0.01)  # removed between the readlink and the lease, or mid-publish: again
    raise StoreError(
        f"{config}: {layout.mirror_dir(config)} points at a generation without a record of its "
        "files, and the manifest describes another one; run `tol-dagster sync` to publish "
        "a generation with its record"
    )


def _pinned(
    layout: Layout, config: str, generation: Path, handle: IO[bytes] | None
) -> PinnedGeneration | None:
    if not generation.is_dir():
        return None
    number = _generation_number(generation) or 0
    record = read_record(layout, config, generation.name)
    if record is not None:
        return PinnedGeneration(config, generation, number, record.files, record.commit, handle)
    manifest = load_manifest(layout, config)
    if manifest is None or manifest.generation != generation.name:
        return None
    files = {e.name: e.sha256 for e in manifest.entries}
    return PinnedGeneration(config, generation, number, files, manifest.upstream_commit, handle)


def _switch_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` with one rename; a reader never sees it missing or half-made."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temp = link.parent / f"{TEMP_PREFIX}{link.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    os.symlink(os.path.relpath(target, link.parent), temp)  # relative: the home can move
    try:
        if link.exists() and not link.is_symlink():
            raise _hand_made(link)
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(link.parent)


def _remove_tree(path: Path) -> int:
    """Remove a file or folder; return the bytes really freed (a file's last hard link only)."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(status.st_mode):
        freed = sum(_remove_tree(child) for child in path.iterdir())
        path.rmdir()
        return freed
    path.unlink()
    return status.st_size if stat.S_ISREG(status.st_mode) and status.st_nlink == 1 else 0


def prune_derived(layout: Layout, config: str, keep_sha256s: Collection[str]) -> int:
    """Remove per-file results (`derived/<sha256>/`) of contents no generation kept holds;
    returns the bytes freed. Results are keyed by content, so what is kept stays valid.
    Contents of every generation still on disk are kept too: a pinned run may read them."""
    keep = set(keep_sha256s) | generation_files_on_disk(layout, config)
    root = layout.derived_dir(config, "x").parent
    return sum(_remove_tree(path) for path in _children(root) if path.name not in keep)


# --- quarantine ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuarantinedFile:
    path: Path
    reason: str
    quarantined_at: datetime
    size: int


def quarantine(
    layout: Layout, config: str, path: Path, reason: str, *, sha256: str | None = None
) -> Path:
    """Move a failed file (staged or partial) into quarantine with `<file>.reason.txt` beside it.

    Named `<name>.<sha256[:12]>` when the content hash is known (quarantining the same bytes
    twice keeps one copy), else `<name>.<UTC time>`. Published files are refused: moving one
    would break the mirror; the audit reports them instead.
    """
    current = current_generation(layout, config)
    if current is not None and path.resolve().parent == current.resolve():
        raise StoreError(f"{path} is part of the published mirror; it cannot be quarantined")
    moment = datetime.now(UTC)
    tag = sha256[:12] if sha256 else moment.strftime("%Y%m%dT%H%M%S%fZ")
    folder = layout.quarantine_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.name}.{tag}"
    shutil.move(path, target)
    details = (
        f"file: {path}\nsha256: {sha256 or 'unknown'}\nquarantined_at: {utc_timestamp(moment)}\n"
    )
    write_atomic(_reason_path(target), f"{reason.rstrip()}\n\n{details}".encode())
    return target


def _reason_path(quarantined: Path) -> Path:
    return quarantined.with_name(quarantined.name + REASON_SUFFIX)


def list_quarantine(layout: Layout, config: str) -> list[QuarantinedFile]:
    """Quarantined files with their reasons, oldest first."""
    folder = layout.quarantine_dir(config)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.name.endswith(REASON_SUFFIX) or not path.is_file():
            continue
        reason_file = _reason_path(path)
        if reason_file.is_file():
            reason = reason_file.read_text(encoding="utf-8").split("\n\nfile: ", 1)[0]
            stamp = reason_file.stat().st_mtime
        else:
            reason, stamp = "no reason recorded", path.stat().st_ctime
        found.append(
            QuarantinedFile(path, reason, datetime.fromtimestamp(stamp, UTC), path.stat().st_size)
        )
    return sorted(found, key=lambda q: (q.quarantined_at, q.path.name))


# --- cleanup -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanupReport:
    generations: tuple[Path, ...] = ()
    staging: tuple[Path, ...] = ()
    partials: tuple[Path, ...] = ()
    quarantined: tuple[Path, ...] = ()
    temporary: tuple[Path, ...] = ()
    bytes_freed: int = 0

    @property
    def removed(self) -> tuple[Path, ...]:
        return (
            *self.generations,
            *self.staging,
            *self.partials,
            *self.quarantined,
            *self.temporary,
        )


@dataclass
class _Removal:
    """Collects what a cleanup removed, by kind, and the bytes it freed."""

    removed: dict[str, list[Path]] = field(default_factory=dict)
    bytes_freed: int = 0

    def remove(self, kind: str, path: Path) -> None:
        self.bytes_freed += _remove_tree(path)
        self.removed.setdefault(kind, []).append(path)

    def report(self) -> CleanupReport:
        return CleanupReport(
            **{kind: tuple(paths) for kind, paths in self.removed.items()},
            bytes_freed=self.bytes_freed,
        )


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


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
    current_number = None if current is None else _generation_number(current)
    found: list[tuple[Path, float | None]] = []
    generations = _generations(layout, config)
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
    quarantine_max_age_days: float | None = 30.0,
    now: datetime | None = None,
    grace_s: float | None = None,
) -> CleanupReport:
    """Remove what nothing needs any more and report the bytes freed (hard links counted once).

    Removed: generations other than the current, the previous and the manifest's, once
    superseded for `grace_s` (default TOL_GENERATION_GRACE_S) and pinned by no run; staging of
    commits other than `keep_commit`; partials whose sha256 is not in `wanted_sha256s`;
    quarantined files older than `quarantine_max_age_days` (None keeps them); temp files that
    interrupted writes left. Call it when no sync of this config is running.
    """
    removal = _Removal()
    moment = (now or datetime.now(UTC)).timestamp()
    grace = generation_grace_s() if grace_s is None else grace_s
    manifest = load_manifest(layout, config)
    keep = {current_generation(layout, config), previous_generation(layout, config)}
    if manifest is not None:
        keep.add(layout.generations_dir(config) / manifest.generation)
    for path, superseded_at in _superseded(layout, config):
        if path in keep or (superseded_at is not None and moment - superseded_at < grace):
            continue
        with unleased(layout, config, path.name) as free:
            if free:
                removal.remove("generations", path)
                record_path(layout, config, path.name).unlink(missing_ok=True)
    for path in _children(_staging_root(layout, config)):
        if path.name != keep_commit:
            removal.remove("staging", path)
    wanted = set(wanted_sha256s)
    for path in _children(layout.partial_dir(config)):
        if path.name.split(".", 1)[0] not in wanted:
            removal.remove("partials", path)
    if quarantine_max_age_days is not None:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=quarantine_max_age_days)
        for item in list_quarantine(layout, config):
            if item.quarantined_at < cutoff:
                removal.remove("quarantined", item.path)
                if _reason_path(item.path).exists():
                    removal.remove("quarantined", _reason_path(item.path))
    link = layout.mirror_dir(config)
    for folder in (layout.store_dir(config), layout.quarantine_dir(config), link.parent):
        for path in _children(folder):
            if _is_temp(path) and (folder != link.parent or is_temp_of(path, link)):
                removal.remove("temporary", path)
    return removal.report()


# --- disk ----------------------------------------------------------------------------------------
def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_free_disk(path: Path, bytes_needed: int, *, margin: float = 0.05) -> None:
    """Refuse before fetching if `path`'s disk lacks `bytes_needed` plus a `margin` share.

    Pass only new bytes (`bytes_still_needed`): publishing hard-links, so unchanged, staged and
    partially fetched bytes cost nothing more.
    """
    if bytes_needed <= 0:
        return
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    required = math.ceil(bytes_needed * (1 + margin))
    if required > free:
        raise DiskSpaceError(
            f"not enough free disk for {path}: the sync needs {_human(bytes_needed)} "
            f"({bytes_needed} bytes, {_human(required)} with a {margin:.0%} margin) but only "
            f"{_human(free)} ({free} bytes) is free there. Free at least "
            f"{_human(required - free)} on that disk, or set TOL_HOME to a folder on a disk with room."
        )


# --- audit ---------------------------------------------------------------------------------------
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


def audit_mirror(
    layout: Layout, config: str, manifest: Manifest, *, generation: Path | None = None
) -> AuditReport:
    """Re-hash every published file against the manifest: bit rot, edits, missing or extra files.

    `generation`: the folder to hash, resolved once by the caller (default: the current one),
    so a publish during the minutes of hashing cannot switch files under the audit."""
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
    for entry in manifest.entries:
        path = generation / entry.name
        if not path.is_file():
            drifted.append(Drift(entry.name, f"missing from {generation}"))
            continue
        checked += 1
        size = path.stat().st_size
        if size != entry.size:
            drifted.append(
                Drift(entry.name, f"{size} bytes on disk, the manifest says {entry.size}")
            )
            continue
        digest = sha256_file(path)
        hashed += size
        if digest != entry.sha256:
            drifted.append(
                Drift(
                    entry.name,
                    f"sha256 on disk {digest} differs from the manifest's {entry.sha256} "
                    "(bit rot or an edit in place); fetch it again from upstream",
                )
            )
    known = set(manifest.by_name)
    for path in _children(generation):
        if path.name not in known:
            drifted.append(
                Drift(path.name, f"in {generation} but not in the manifest (added by hand?)")
            )
    return AuditReport(config, generation, checked, hashed, tuple(drifted))


# --- contents kept on disk -----------------------------------------------------------------------
def kept_generations(layout: Layout, config: str) -> list[Path]:
    """Every generation folder still on disk (current, previous, a crash's), newest first: the
    places a content reverted upstream can be linked from instead of downloaded again."""
    return [path for _, path in reversed(_generations(layout, config))]

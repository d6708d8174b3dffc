"""Pinned reads of the mirror: one generation, its own sha256s, and a lease while a run reads it.

`mirror/<config>` is a symlink that each publish switches. A reader that opens files through it
resolves the link again for every file, so a query (or one of our builds) that runs across a
switch can mix two generations, and cache results computed from new bytes under the old
sha256. A pin resolves the link once, to `store/<config>/generations/<name>/`, whose files never
change, and takes each file's sha256 from that generation's own record (written before the switch
that published it, under `store/<config>/generation_records/`): reading the manifest and the link separately would race.

Leases are shared `flock`s on `store/<config>/leases/<name>.lock`; cleanup removes a superseded
generation only once it takes that lock exclusively (and the grace period has passed). flock,
not files naming a pid: the kernel drops the lock when the holder dies however it dies (kill -9
included), so no stale lease outlives a run, and nothing has to guess whether a pid was reused.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tol_dagster.store import checked_json
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile, mirror_files

#: Bumped when the record's shape changes; an unknown format is not trusted.
RECORD_FORMAT = 1


@dataclass(frozen=True)
class GenerationRecord:
    """What one generation holds, written once before it is published: never rewritten."""

    name: str
    commit: str
    files: dict[str, str]  # file name -> sha256 of the bytes in this generation
    published_at: float  # seconds since the epoch, just before the switch


def record_path(layout: Layout, config: str, name: str) -> Path:
    return layout.generation_record_path(config, name)


def lease_path(layout: Layout, config: str, name: str) -> Path:
    return layout.lease_path(config, name)


def write_record(
    layout: Layout, config: str, name: str, commit: str, files: Mapping[str, str], at: float
) -> None:
    document = {
        "format": RECORD_FORMAT,
        "name": name,
        "commit": commit,
        "published_at": at,
        "files": dict(sorted(files.items())),
    }
    write_atomic(record_path(layout, config, name), checked_json.dumps(document).encode())


def read_record(layout: Layout, config: str, name: str) -> GenerationRecord | None:
    """The record of generation `name`; None if it has none (published by an older version) or
    it is unreadable (then the caller falls back to what it can prove)."""
    try:
        document = checked_json.loads(record_path(layout, config, name).read_text("utf-8"))
        if document.get("format") != RECORD_FORMAT or document["name"] != name:
            return None
        files = {str(k): str(v) for k, v in document["files"].items()}
        return GenerationRecord(
            name, str(document["commit"]), files, float(document["published_at"])
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# --- leases ----------------------------------------------------------------------------------


def take_lease(layout: Layout, config: str, name: str) -> IO[bytes]:
    """A shared lock on generation `name`'s lease file, held until the handle is closed."""
    path = lease_path(layout, config, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "ab")  # noqa: SIM115 - the handle is the lease; `PinnedGeneration` closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_SH)
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def unleased(layout: Layout, config: str, name: str) -> Iterator[bool]:
    """Yields True while holding generation `name` exclusively (no reader holds a lease; none
    can take one until the block ends), False if a lease is held. The lease file goes with
    the block when True: remove the generation inside it."""
    path = lease_path(layout, config, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Always through the file, never "no file, no lease": a reader creating it right now must
    # wait for the removal to end, then find the folder gone.
    with open(path, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
            path.unlink(missing_ok=True)  # a reader waiting on it sees the folder gone, retries
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the pinned generation -------------------------------------------------------------------


@dataclass
class PinnedGeneration:
    """One generation of a config's mirror, resolved once: read only `path`'s files.

    `files` maps each file name to the sha256 of the bytes in this generation; key results by
    it. As a context manager it holds a lease, so cleanup keeps the generation until the block
    ends (and TOL_GENERATION_GRACE_S after it was superseded, lease or not).
    """

    config: str
    path: Path
    number: int
    files: dict[str, str]
    commit: str
    _lease: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def generation(self) -> str:
        """The generation's name, as `Manifest.generation` spells it (records built from it)."""
        return self.name

    @property
    def upstream_commit(self) -> str:
        return self.commit

    @property
    def leased(self) -> bool:
        return self._lease is not None and not self._lease.closed

    def mirror_files(self) -> list[MirrorFile]:
        """The generation's files in the global order, each with the sha256 of its own bytes."""
        return mirror_files(self.path, self.files)

    def paths(self) -> list[Path]:
        return [f.path for f in self.mirror_files()]

    def release(self) -> None:
        """Drop the lease (idempotent); the paths stay readable for the grace period."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None

    def __enter__(self) -> PinnedGeneration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def generation_files_on_disk(layout: Layout, config: str) -> set[str]:
    """The sha256s that the records of generations still on disk name (results of those
    contents may still be read by a run pinned to one of them)."""
    folder = layout.generations_dir(config)
    if not folder.is_dir():
        return set()
    found: set[str] = set()
    for path in folder.iterdir():
        if path.is_dir() and not path.is_symlink():
            record = read_record(layout, config, path.name)
            if record is not None:
                found |= set(record.files.values())
    return found

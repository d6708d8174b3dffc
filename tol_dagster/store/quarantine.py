"""Quarantine: files that failed a check, moved aside with the reason beside each one."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tol_dagster.errors import StoreError
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.generations import current_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import utc_timestamp

REASON_SUFFIX = ".reason.txt"


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
    write_atomic(reason_path(target), f"{reason.rstrip()}\n\n{details}".encode())
    return target


def reason_path(quarantined: Path) -> Path:
    """Where the reason of a quarantined file is written."""
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
        reason_file = reason_path(path)
        if reason_file.is_file():
            reason = reason_file.read_text(encoding="utf-8").split("\n\nfile: ", 1)[0]
            stamp = reason_file.stat().st_mtime
        else:
            reason, stamp = "no reason recorded", path.stat().st_ctime
        found.append(
            QuarantinedFile(path, reason, datetime.fromtimestamp(stamp, UTC), path.stat().st_size)
        )
    return sorted(found, key=lambda q: (q.quarantined_at, q.path.name))

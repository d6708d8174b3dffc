"""When each mirror file's bytes were last found to hash to its sha256.

What is computed from a mirror file and kept by its sha256 (the derived tables' parts) must be
computed from bytes that hash so: a part of rotted bytes is kept under the file's right sha256,
so the resync that fetches the file again does not replace it, and it is summed into every
table after. The gate hashes each file anyway and notes it here (the file's `file_version`
and when), and so does the hashing below; a part is computed only from a file noted within
RECENT_SECONDS and still the same file on disk, any other file is hashed first (~0.3 s per
upstream file of 520 MB on one core here, against 0.2-2 s for its parts). Parts computed long
after the gate (an upgrade that bumps their version, parts deleted by hand) are then of
verified bytes too. The audits write no note: they have no side effects.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tol_dagster.store.durable import write_atomic
from tol_dagster.store.hashing import file_version, sha256_files, usable_cores
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile, changed_on_disk

_log = logging.getLogger(__name__)

#: A file hashed this recently is not hashed again before its parts are computed: it covers a
#: first sync's gate, publish and derived runs, and no more (a window for rot to slip in).
RECENT_SECONDS = 6 * 3600

#: The note's name in the file's folder of per-file results.
NOTE_NAME = "verified.json"


def note_path(layout: Layout, config: str, sha256: str) -> Path:
    """Where the note of the last verification of the content `sha256` is kept."""
    return layout.derived_dir(config, sha256) / NOTE_NAME


def note_verified(
    layout: Layout, config: str, sha256: str, stat: os.stat_result, at: float
) -> None:
    """Note that the file `stat` describes (taken before it was hashed: a file renamed in
    meanwhile is not noted as this one) hashed to `sha256` from the time `at`."""
    note = {"version": list(file_version(stat)), "at": at}
    path = note_path(layout, config, sha256)
    try:  # a note lost, torn or not written costs a re-hash, never a verdict: no fsync
        write_atomic(path, json.dumps(note).encode(), sync_dir=False, publish=os.replace)
    except OSError as error:
        _log.debug("%s not noted as verified: %s", path, error)


def still_noted(layout: Layout, config: str, file: MirrorFile) -> bool:
    """Whether the note of `file`'s content still names `file` as it is on disk, however old
    (`forget_content` removes it with the content's results)."""
    return _noted_at(layout, config, file) is not None


def recently_verified(
    layout: Layout, config: str, file: MirrorFile, now: float, within: float
) -> bool:
    """Whether `file`, as it is on disk now, was found to hash to its sha256 at most `within`
    seconds before `now` (a note from the future, a clock set back, does not count)."""
    at = _noted_at(layout, config, file)
    return at is not None and now - within <= at <= now


def _noted_at(layout: Layout, config: str, file: MirrorFile) -> float | None:
    """When `file`, as it is on disk now, was noted (None: no note of it that reads).

    The same file is the same inode, size and mtime; its device number is not compared: a
    network filesystem gives each machine's mount a number of its own, and a note the gate
    wrote on one machine must spare the hash on the worker computing the parts on another."""
    try:
        note = json.loads(note_path(layout, config, file.sha256).read_bytes())
        version, at = list(note["version"]), float(note["at"])
        same = version[1:] == list(file_version(file.path.stat()))[1:]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return at if same else None


def verify(
    files: Sequence[MirrorFile],
    layout: Layout,
    config: str,
    *,
    within: float = RECENT_SECONDS,
) -> list[MirrorFile]:
    """Hash those of `files` not verified within `within` seconds (in threads, one per core)
    and note them; `changed_on_disk` (StoreError) names the first that no longer hashes to
    its sha256, once the others are noted. Returns those hashed (the others' notes trusted)."""
    now = time.time()
    due = [f for f in files if not recently_verified(layout, config, f, now, within)]
    if not due:
        return due
    _log.info("hashing %d mirror files not verified in the last %d s", len(due), within)
    stats = {f.path: f.path.stat() for f in due}
    found = sha256_files(list(stats), threads=usable_cores())
    changed = [f for f in due if found[f.path] != f.sha256.lower()]
    for file in due:
        if file not in changed:
            note_verified(layout, config, file.sha256, stats[file.path], now)
    if changed:
        raise changed_on_disk(changed[0], found[changed[0].path])
    return due

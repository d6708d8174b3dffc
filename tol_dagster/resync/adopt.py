"""Adopt a copy the user already has (`hf download --local-dir`, or any folder of the files).

Most users hold the dataset already, unverified: the client checks no sha256, keeps stale files
after a failed request and never deletes what upstream removed. Adopting hashes the folder's
parquet files (in parallel, one thread per core), matches them to upstream's files of the
current commit by sha256, and brings the matches into that commit's staging by hard link (a copy
with `copy`, or across file systems). The resync that follows (`stage`) then finds them staged,
fetches only what is missing or different, inspects every file and runs the whole gate, as for
a download. The folder is only read: no file in it is written, renamed, chmodded or touched, and
the inodes the store now shares with it keep their mode (`store.shared_files`).

Only files whose size is the size of a file the mirror still lacks are hashed: no other file
can have its sha256. `hf download` leaves `.cache/huggingface/download/<path>.metadata` (commit,
etag = the sha256 it meant to write); read only to say why a file is ignored (stale or corrupt).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tol_dagster.errors import SettingsError
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.resync.adopt_report import AdoptionReport, ReportEntry
from tol_dagster.resync.fetch import Log, Progress
from tol_dagster.resync.plan import plan_sync
from tol_dagster.resync.state import config_lock
from tol_dagster.store.disk import check_free_disk
from tol_dagster.store.hashing import sha256_files, usable_cores
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest
from tol_dagster.store.shared_files import COPIED, LINKED, bring_in, record_shared
from tol_dagster.store.staging import stage_path, staged_files

#: Where `hf download --local-dir` keeps what it downloaded: `<path>.metadata` per file.
HF_METADATA = PurePosixPath(".cache/huggingface/download")


@dataclass(frozen=True)
class Candidate:
    """A parquet file of the folder: its path relative to the folder, and its size."""

    relative: str
    path: Path
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.relative).name


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    upstream: RemoteFile


def find_candidates(source: Path) -> list[Candidate]:
    """Every readable regular `*.parquet` file under `source`, hidden folders (`.cache`) left out."""
    if not source.is_dir():
        raise SettingsError(
            f"{source} is not a folder; give the folder `hf download --local-dir` wrote "
            "(e.g. ./data), or any folder holding the config's parquet files"
        )
    found = []
    for folder, subfolders, names in os.walk(source):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or not name.endswith(".parquet"):
                continue
            try:
                status = path.stat()
            except OSError:
                continue  # a dangling symlink
            if stat.S_ISREG(status.st_mode):
                found.append(Candidate(path.relative_to(source).as_posix(), path, status.st_size))
    return found


def adopt(
    layout: Layout,
    remote: RemoteConfig,
    source: Path,
    *,
    copy: bool = False,
    threads: int | None = None,
    log: Log = print,
) -> AdoptionReport:
    """Bring the files of `source` that hold upstream's bytes into the staging of
    `remote.commit`; the report says what was adopted, what the mirror already holds and what
    was ignored (and why). No request is made; the resync that follows fetches the rest."""
    source = source.expanduser().absolute()
    candidates = find_candidates(source)
    config = remote.config
    plan = plan_sync(load_manifest(layout, config), remote)
    staged = staged_files(layout, config, remote.commit)
    wanted = [f for f in plan.to_fetch if f.name not in staged]
    sizes = {f.size for f in wanted}
    to_hash = [c for c in candidates if c.size in sizes and os.access(c.path, os.R_OK)]
    threads = max(1, min(threads or usable_cores(), len(to_hash) or 1))
    started = time.monotonic()
    hashes = _hash(to_hash, threads, log)
    seconds = time.monotonic() - started
    matches = _match(to_hash, hashes, wanted)
    adopted = _bring_in(layout, remote, matches, copy=copy, log=log)
    matched = {m.candidate.path for m in matches}
    rest = [c for c in candidates if c.path not in matched]
    mirrored, ignored = _classify(source, rest, hashes, remote, wanted, matches)
    return AdoptionReport(
        config=config,
        commit=remote.commit,
        source=str(source),
        adopted=tuple(adopted),
        mirrored=tuple(mirrored),
        ignored=tuple(ignored),
        hashed_files=len(to_hash),
        hashed_bytes=sum(c.size for c in to_hash),
        hash_seconds=seconds,
        threads=threads,
    )


def _hash(to_hash: Sequence[Candidate], threads: int, log: Log) -> dict[Path, str]:
    """sha256 of each candidate by path, in parallel, with progress lines in `log`."""
    if not to_hash:
        return {}
    total = sum(c.size for c in to_hash)
    log(f"hashing {len(to_hash)} files ({total / 1e6:,.1f} MB) in {threads} threads")
    progress = Progress(log, len(to_hash), total, task="hash")
    return sha256_files(
        [c.path for c in to_hash],
        threads=threads,
        on_bytes=progress.add,
        on_file=lambda _path, _sha256: progress.file_done(),
    )


def _match(
    to_hash: Sequence[Candidate], hashes: dict[Path, str], wanted: Sequence[RemoteFile]
) -> list[Match]:
    """Each wanted upstream file paired with one candidate holding its sha256; a candidate at
    upstream's path (or with its name) is preferred over a duplicate elsewhere in the folder."""
    by_sha256: dict[str, list[RemoteFile]] = {}
    for remote_file in wanted:
        by_sha256.setdefault(remote_file.sha256, []).append(remote_file)

    def preference(candidate: Candidate) -> tuple[bool, str]:
        upstream = by_sha256.get(hashes[candidate.path], [])
        named = any(candidate.relative == f.path or candidate.name == f.name for f in upstream)
        return (not named, candidate.relative)

    taken: set[str] = set()
    matches = []
    for candidate in sorted(to_hash, key=preference):
        for remote_file in by_sha256.get(hashes[candidate.path], []):
            if remote_file.name not in taken:
                taken.add(remote_file.name)
                matches.append(Match(candidate, remote_file))
                break
    return matches


def _bring_in(
    layout: Layout, remote: RemoteConfig, matches: Sequence[Match], *, copy: bool, log: Log
) -> list[ReportEntry]:
    """Link (or copy) each match into the commit's staging, under the config's lock; the
    inodes now shared with the folder are recorded so that publishing leaves their mode."""
    config = remote.config
    if copy:
        check_free_disk(layout.store_dir(config), sum(m.upstream.size for m in matches))
    entries, shared = [], []
    with config_lock(layout, config):
        for match in matches:
            target = stage_path(layout, config, remote.commit, match.upstream.name)
            if target.exists():
                continue  # staged meanwhile by another attempt: verified there already
            how = bring_in(match.candidate.path, target, copy=copy)
            if how == LINKED:
                shared.append(match.candidate.path)
            entries.append(
                ReportEntry(
                    match.candidate.relative, match.candidate.size, match.upstream.name, how
                )
            )
        if shared:
            record_shared(layout, config, shared)
    linked = sum(1 for e in entries if e.how == LINKED)
    log(f"adopted {len(entries)} files: {linked} hard-linked, {len(entries) - linked} {COPIED}")
    return entries


def _classify(
    source: Path,
    rest: Sequence[Candidate],
    hashes: dict[Path, str],
    remote: RemoteConfig,
    wanted: Sequence[RemoteFile],
    matches: Sequence[Match],
) -> tuple[list[ReportEntry], list[ReportEntry]]:
    """The candidates not adopted: those whose upstream file the mirror (or staging) already
    holds, and the ignored ones with the reason."""
    by_name = {f.name: f for f in remote.files}
    needed = {f.name for f in wanted}
    adopted_from = {m.upstream.sha256: m.candidate.relative for m in matches}
    mirrored, ignored = [], []
    for candidate in rest:
        upstream = by_name.get(candidate.name)
        sha256 = hashes.get(candidate.path)
        elsewhere = _other_folder(candidate, remote.config)
        if upstream is not None and elsewhere is not None:
            reason = f"in {elsewhere}/, not {remote.config}/ (another config's?): not its name's"
            ignored.append(ReportEntry(candidate.relative, candidate.size, reason=reason))
            continue
        if (
            upstream is not None
            and upstream.name not in needed
            and upstream.size == candidate.size
            and sha256 in (None, upstream.sha256)
        ):
            mirrored.append(ReportEntry(candidate.relative, candidate.size, upstream.name))
            continue
        if sha256 is not None and sha256 in adopted_from:
            reason = f"the same bytes as {adopted_from[sha256]}, adopted from there"
        else:
            reason = _why_ignored(source, candidate, sha256, upstream, remote)
        ignored.append(ReportEntry(candidate.relative, candidate.size, reason=reason))
    return mirrored, ignored


def _other_folder(candidate: Candidate, config: str) -> str | None:
    """The folder of `candidate` when it is a folder named otherwise than `config` (`hf
    download` of the whole repo puts each config's files in a folder of its name)."""
    folder = PurePosixPath(candidate.relative).parent.name
    return folder if folder not in ("", config) else None


def _why_ignored(
    source: Path,
    candidate: Candidate,
    sha256: str | None,
    upstream: RemoteFile | None,
    remote: RemoteConfig,
) -> str:
    at = f"{remote.config} at {remote.commit[:12]}"
    if upstream is None:
        return f"no file of {at} has these bytes" if sha256 else f"no file of {at} has this name"
    if sha256 is None:
        differs = f"size {candidate.size:,} is not upstream's {upstream.size:,}"
    else:
        differs = f"sha256 {sha256[:12]} is not upstream's {upstream.sha256[:12]}"
    return f"{differs}{_hf_download_says(source, candidate, sha256, remote.commit)}"


def _hf_download_says(source: Path, candidate: Candidate, sha256: str | None, commit: str) -> str:
    """What `hf download`'s metadata adds: the file is stale (an older commit's bytes, intact)
    or corrupt (not the bytes it downloaded)."""
    metadata = source / HF_METADATA / f"{candidate.relative}.metadata"
    try:
        downloaded_at, etag = metadata.read_text(encoding="utf-8").splitlines()[:2]
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    if sha256 is not None and etag.strip() != sha256:
        return f"; corrupt: not the bytes `hf download` wrote (its etag {etag.strip()[:12]})"
    if downloaded_at.strip() != commit:
        return f"; stale: `hf download` fetched it at commit {downloaded_at.strip()[:12]}"
    return ""

"""Resync one config: observe upstream, stage what changed, gate it, publish it atomically.

The three steps are separate so Dagster can put the gate's blocking checks between staging and
publishing: `stage` fetches and verifies only files whose sha256 differs from the manifest and
inspects each one as soon as it lands (pipelined with the other downloads); `gate` turns the
per-file facts plus cheap cross-file facts into one result per check; `publish` switches the
mirror to a new generation of hard links and writes the manifest. State between the steps is
small JSON under `Layout.state_dir`, so each step can run in its own process. A staged state
is kept under the key of the run that staged it (its run id), and `publish` takes exactly that
key: a run never publishes what another run staged (see `tol_dagster.defs.resync_slot`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import exit_codes
from tol_dagster.errors import (
    IntegrityError,
    ResyncConflict,
    RevisionGone,
    StoreError,
    UpstreamError,
    ValidationFailed,
)
from tol_dagster.hub.client import HubClient
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.resync import reuse
from tol_dagster.resync.revision_diff import RevisionDiff, diff_generations
from tol_dagster.schema import emb_bounds, expected_schema
from tol_dagster.store import generations as mirror
from tol_dagster.store.durable import file_lock, write_atomic
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import (
    Manifest,
    Plan,
    load_manifest,
    manifest_after,
    plan_sync,
    save_manifest,
    schema_to_json,
    utc_timestamp,
)
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration
from tol_dagster.validation.checks import (
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    EMB_UNCHANGED_FOR_EXISTING_UUIDS,
    FOOTER_READS,
    METADATA_EXPECTATIONS,
    ROW_LOSS_WITHIN_LIMIT,
    ROWS_MATCH_CARD,
    ROWS_MATCH_FOOTER,
    SCHEMA_MATCHES_CONTRACT,
    SCHEMA_MATCHES_LAST_VALIDATED,
    SHA256_MATCHES_UPSTREAM,
    SORTED_BY_CONTRACT_KEY,
    UUID_UNIQUE,
    CheckResult,
)
from tol_dagster.validation.contract import check_schema
from tol_dagster.validation.emb_digests import digests_path
from tol_dagster.validation.emb_unchanged import check_emb_unchanged
from tol_dagster.validation.file_facts import FileFacts, inspect_file
from tol_dagster.validation.row_counts import check_row_loss, check_rows_match_card
from tol_dagster.validation.sort_order import check_sorted_across
from tol_dagster.validation.uuid_index import check_uuid_unique_across, hashes_path

Log = Callable[[str], None]

#: The gate: blocking checks on the staged state, by name, with what each asserts.
GATE_CHECKS: dict[str, str] = {
    SHA256_MATCHES_UPSTREAM: "Every fetched file's bytes on disk, hashed again after the download, have the Hub's LFS oid as sha256.",
    FOOTER_READS: "Every file's parquet footer reads.",
    SCHEMA_MATCHES_CONTRACT: "Schema equals the config's contract (names, order, types, emb width).",
    SCHEMA_MATCHES_LAST_VALIDATED: "Schema equals the last validated one, unless the change was accepted.",
    ROWS_MATCH_FOOTER: "Rows read equal the footer's row count.",
    ROWS_MATCH_CARD: "Total rows equal the dataset card's num_examples (when the card has one).",
    ROW_LOSS_WITHIN_LIMIT: "Rows lost against the last validated state stay within TOL_MAX_ROW_LOSS.",
    METADATA_EXPECTATIONS: "Great Expectations suite on the metadata columns.",
    SORTED_BY_CONTRACT_KEY: "Rows sorted by the contract's key within files and across their boundaries.",
    EMB_FINITE: "No NaN or Inf in emb.",
    EMB_NORMS_WITHIN_BOUNDS: "Every fetched row's emb L2 norm and max |x| lie within the bounds the contract pins for the config.",
    EMB_UNCHANGED_FOR_EXISTING_UUIDS: "No uuid of the last validated generation comes with different emb bytes, unless accepted (--accept-emb-change).",
    UUID_UNIQUE: "uuid unique across the whole config.",
}
AUDIT_CHECK = "mirror_matches_manifest"

#: How often a config may be re-planned when its pinned commit vanishes mid-sync.
MAX_REPLANS = 3
PROGRESS_EVERY_S = 5.0
#: The staged state's key when no run names one (the core functions called directly).
LOCAL_KEY = "local"
#: Staged states kept per config (the newest; older ones are only history).
KEEP_STAGED = 10
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- state shared between steps ---------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    """One file of the candidate generation: kept from the mirror, fetched, or failed."""

    name: str
    path: str
    sha256: str
    size: int
    status: str  # "current" | "fetched" | "failed"
    reason: str | None = None
    rows: int | None = None


@dataclass
class StagedState:
    """The candidate generation of one config at one upstream commit."""

    config: str
    repo_id: str
    commit: str
    expected_rows: int | None
    added: list[str]
    changed: list[str]
    removed: list[str]
    files: list[StagedFile]
    bytes_fetched: int = 0
    download_seconds: float = 0.0
    replans: int = 0
    gate: dict[str, bool] = field(default_factory=dict)
    #: Who staged it (a run id): the key `publish` must be given to publish it.
    key: str = LOCAL_KEY
    #: The mirror generation the plan was made against (None: no mirror yet). Publishing on
    #: top of any other generation would mix two runs' views of the mirror, so it is refused.
    base_generation: str | None = None

    @property
    def fetched(self) -> list[StagedFile]:
        return [f for f in self.files if f.status == "fetched"]

    @property
    def failed(self) -> list[StagedFile]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def total_rows(self) -> int:
        return sum(f.rows or 0 for f in self.files)

    @property
    def download_mb_per_s(self) -> float:
        return (
            self.bytes_fetched / 1e6 / self.download_seconds if self.download_seconds > 0 else 0.0
        )

    @property
    def version(self) -> str:
        """Content identity of the candidate: the files' sha256s and the card's count."""
        return content_version([(f.name, f.sha256) for f in self.files], self.expected_rows)

    def remote(self) -> RemoteConfig:
        """The upstream state this candidate was staged from (what publishing records)."""
        files = tuple(RemoteFile(f.path, f.size, f.sha256) for f in self.files)
        return RemoteConfig(self.repo_id, self.config, self.commit, files, self.expected_rows)

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate) and all(self.gate.values())

    def files_markdown(self, limit: int = 200) -> str:
        """Per-file state for the UI: changed and failed files first."""
        order = {"failed": 0, "fetched": 1, "current": 2}
        rows = sorted(self.files, key=lambda f: (order[f.status], f.name))
        lines = ["| file | state | rows | MB | sha256 | reason |", "|---|---|---|---|---|---|"]
        for f in rows[:limit]:
            state = "changed" if f.status == "fetched" and f.name in self.changed else f.status
            state = "added" if f.status == "fetched" and f.name in self.added else state
            reason = (f.reason or "").replace("|", "\\|").replace("\n", " ")
            rows_text = "" if f.rows is None else f"{f.rows:,}"
            lines.append(
                f"| {f.name} | {state} | {rows_text} | {f.size / 1e6:,.1f} | {f.sha256[:12]} | {reason} |"
            )
        for name in self.removed:
            lines.append(f"| {name} | removed upstream | | | | |")
        if len(rows) > limit:
            lines.append(f"| … {len(rows) - limit} more | | | | | |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> StagedState:
        document = json.loads(text)
        document["files"] = [StagedFile(**f) for f in document["files"]]
        return cls(**document)


def content_version(files: list[tuple[str, str]], expected_rows: int | None) -> str:
    digest = hashlib.sha256()
    for name, sha256 in sorted(files):
        digest.update(f"{name}\0{sha256}\n".encode())
    digest.update(f"rows={expected_rows}".encode())
    return digest.hexdigest()[:16]


def remote_version(remote: RemoteConfig) -> str:
    """Changes when this config's files or card count change, not when other paths do."""
    return content_version([(f.name, f.sha256) for f in remote.files], remote.expected_rows)


def _remote_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "remote.json"


def _staged_dir(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "staged"


def _staged_path(layout: Layout, config: str, key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise ValueError(f"staged state key {key!r} is not a run id (letters, digits, - and _)")
    return _staged_dir(layout, config) / f"{key}.json"


def save_remote(layout: Layout, remote: RemoteConfig) -> None:
    document = {**asdict(remote), "files": [asdict(f) for f in remote.files]}
    write_atomic(_remote_path(layout, remote.config), json.dumps(document, indent=1).encode())


def load_remote(layout: Layout, config: str) -> RemoteConfig | None:
    path = _remote_path(layout, config)
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    document["files"] = tuple(RemoteFile(**f) for f in document["files"])
    return RemoteConfig(**document)


def load_staged(layout: Layout, config: str, key: str | None = None) -> StagedState | None:
    """The state staged under `key` (a run id), or with no key the newest one, for inspection
    only: publishing always names its key."""
    if key is not None:
        path = _staged_path(layout, config, key)
        return StagedState.from_json(path.read_text()) if path.is_file() else None
    newest = _staged_files(layout, config)
    return StagedState.from_json(newest[0].read_text()) if newest else None


def _staged_files(layout: Layout, config: str) -> list[Path]:
    """Staged states of `config`, newest first."""
    folder = _staged_dir(layout, config)
    files = [p for p in folder.glob("*.json") if p.is_file()] if folder.is_dir() else []
    return sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _save_staged(layout: Layout, state: StagedState) -> None:
    write_atomic(_staged_path(layout, state.config, state.key), state.to_json().encode())
    for old in _staged_files(layout, state.config)[KEEP_STAGED:]:
        old.unlink(missing_ok=True)


def config_lock(layout: Layout, config: str) -> contextlib.AbstractContextManager[None]:
    """One writer per config's store at a time. The kernel drops the lock if the process dies."""
    return file_lock(layout.store_dir(config) / ".lock")


# --- observe and decide -----------------------------------------------------------------------


def refresh_remote(layout: Layout, client: HubClient, config: str) -> RemoteConfig:
    """Read upstream's state of `config` and keep it for the steps that follow."""
    remote = client.remote_config(config)
    save_remote(layout, remote)
    return remote


def plan_against_mirror(layout: Layout, remote: RemoteConfig) -> Plan:
    return plan_sync(load_manifest(layout, remote.config), remote)


def plan_summary(plan: Plan) -> str:
    return (
        f"{len(plan.added)} added, {len(plan.changed)} changed, {len(plan.removed)} removed, "
        f"{len(plan.unchanged)} unchanged ({plan.bytes_to_fetch / 1e6:,.1f} MB to fetch)"
    )


@dataclass(frozen=True)
class Decision:
    needs_run: bool
    reason: str


def decide(layout: Layout, remote: RemoteConfig) -> Decision:
    """Does `remote` need a resync? Files differ, or the card's count for this config changed."""
    manifest = load_manifest(layout, remote.config)
    plan = plan_sync(manifest, remote)
    if manifest is None:
        return Decision(True, f"first sync: {plan_summary(plan)}")
    if not plan.is_noop:
        return Decision(True, plan_summary(plan))
    if manifest.card_expected_rows != remote.expected_rows:
        return Decision(
            True,
            f"card count changed {manifest.card_expected_rows} -> {remote.expected_rows}: revalidation, no download",
        )
    return Decision(False, "in sync: the commit touched other paths only")


# --- stage ------------------------------------------------------------------------------------


class _Progress:
    """Files, bytes, MB/s and ETA in the run log, at most every few seconds."""

    def __init__(self, log: Log, files: int, total_bytes: int) -> None:
        self.log, self.files, self.total = log, files, total_bytes
        self.done_files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.bytes += count
            self._maybe_log()

    def file_done(self) -> None:
        with self.lock:
            self.done_files += 1
            self._maybe_log(force=True)

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.bytes / elapsed
        eta = (self.total - self.bytes) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:,.0f} s" if eta != float("inf") else "?"
        self.log(
            f"{self.done_files}/{self.files} files, {self.bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, "
            f"{rate / 1e6:,.1f} MB/s, ETA {eta_text}"
        )


def _facts_path(layout: Layout, config: str, sha256: str) -> Path:
    return layout.derived_dir(config, sha256) / "facts.json"


def file_facts(layout: Layout, config: str, path: Path, sha256: str) -> FileFacts:
    """The per-file checks of a file that should hold the content `sha256`, cached by content.

    The bytes on disk are hashed again every time: the download hashed them in memory as they
    streamed by, and a file can change after it landed. Only facts about bytes that do have
    `sha256` are cached (with the file's uuid hashes and emb digests); failures are cached too,
    since the same bytes always give the same facts and the gate reads them to say which check
    each file failed.
    """
    actual = sha256_file(path)
    genuine = actual.lower() == sha256.lower()
    cached = _facts_path(layout, config, sha256)
    if genuine and cached.is_file():
        return FileFacts.from_json(cached.read_text())
    file = MirrorFile(path.name, sha256, path)
    facts = inspect_file(
        path,
        expected_sha256=sha256,
        actual_sha256=actual,
        expected_schema=expected_schema(config),
        uuid_hashes_path=hashes_path(layout, config, file) if genuine else None,
        emb_bounds=emb_bounds(config),
        emb_digests_path=digests_path(layout, config, file) if genuine else None,
    )
    if genuine:
        write_atomic(cached, facts.to_json().encode())
    return facts


def _cached_facts(layout: Layout, config: str, sha256: str) -> FileFacts | None:
    cached = _facts_path(layout, config, sha256)
    return FileFacts.from_json(cached.read_text()) if cached.is_file() else None


def stage(
    layout: Layout,
    client: HubClient,
    config: str,
    *,
    commit: str | None = None,
    max_parallel: int = 4,
    key: str = LOCAL_KEY,
    log: Log = print,
) -> StagedState:
    """Fetch, verify and inspect every file of upstream's commit that the mirror lacks.

    Unchanged files cost no request; files that passed in an earlier attempt stay staged, so a
    retry fetches only what is still missing. A file that fails is quarantined with its reason
    and marked failed (the gate then refuses). If the commit vanishes mid-sync (force-push),
    the plan is made again against the new head. The state is saved under `key` (the run id).
    """
    with config_lock(layout, config):
        remote = load_remote(layout, config) or refresh_remote(layout, client, config)
        if commit and commit != remote.commit:
            log(
                f"upstream moved from {commit[:12]} to {remote.commit[:12]} since the request; syncing the newer commit"
            )
        superseded: RemoteConfig | None = None
        for replans in range(MAX_REPLANS + 1):
            try:
                state = _stage_commit(
                    layout, client, remote, superseded, max_parallel=max_parallel, log=log
                )
            except RevisionGone as gone:
                if replans == MAX_REPLANS:
                    raise
                log(f"{gone}; re-planning against the new head")
                superseded, remote = remote, refresh_remote(layout, client, config)
                continue
            state.replans = replans
            state.key = key
            _save_staged(layout, state)
            return state
    raise AssertionError("unreachable")


def _stage_commit(
    layout: Layout,
    client: HubClient,
    remote: RemoteConfig,
    superseded: RemoteConfig | None,
    *,
    max_parallel: int,
    log: Log,
) -> StagedState:
    config = remote.config
    manifest = load_manifest(layout, config)
    plan = plan_sync(manifest, remote)
    log(f"{config} @ {remote.commit[:12]}: {plan_summary(plan)}")
    _reuse_earlier_staging(layout, config, plan)
    if superseded is not None:
        # Files that landed before the commit vanished were verified against its sha256s.
        _reuse_staged(layout, config, plan, superseded.commit, _identities(superseded.files))
    reuse.link_kept_contents(layout, config, plan, log=log)
    mirror.check_free_disk(
        layout.store_dir(config), mirror.bytes_still_needed(layout, config, plan)
    )

    staged = mirror.staged_files(layout, config, plan.commit)
    results: dict[str, StagedFile] = {}
    progress = _Progress(log, len(plan.to_fetch), plan.bytes_to_fetch)
    started = time.monotonic()
    stop = threading.Event()

    def on_progress(count: int) -> None:
        if stop.is_set():  # interrupted: end this download now, its partial kept for resuming
            raise _Stopped("the sync was interrupted")
        progress.add(count)

    def fetch_and_inspect(remote_file: RemoteFile) -> StagedFile:
        dest = mirror.stage_path(layout, config, plan.commit, remote_file.name)
        if remote_file.name not in staged:
            try:
                client.download(
                    remote_file,
                    plan.commit,
                    dest,
                    partial_dir=layout.partial_dir(config),
                    on_progress=on_progress,
                )
            except IntegrityError as error:
                return _failed(remote_file, f"{SHA256_MATCHES_UPSTREAM}: {error}")
        else:
            progress.add(remote_file.size)
        facts = file_facts(layout, config, dest, remote_file.sha256)
        progress.file_done()
        failing = facts.failures()
        schema_only = all(r.check == SCHEMA_MATCHES_CONTRACT for r in failing)
        if failing and not (
            schema_only and additive_extension(pq.read_schema(dest), expected_schema(config))
        ):
            reason = "; ".join(f"{r.check}: {r.message}" for r in failing)
            mirror.quarantine(layout, config, dest, reason, sha256=remote_file.sha256)
            return _failed(remote_file, reason, rows=facts.rows)
        # A file that only adds columns to the contract stays staged: the gate decides, and
        # `--accept-schema-change` may accept it without fetching the file again.
        return StagedFile(
            remote_file.name,
            remote_file.path,
            remote_file.sha256,
            remote_file.size,
            "fetched",
            rows=facts.rows,
        )

    try:
        with ThreadPoolExecutor(
            max_workers=max(1, max_parallel), thread_name_prefix="tol-fetch"
        ) as pool:
            futures = {pool.submit(fetch_and_inspect, f): f for f in plan.to_fetch}
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # SIGINT/SIGTERM: the fetch threads stop at their next chunk
                stop.set()
                for future in futures:
                    future.cancel()
                raise
            for future in done:
                if future.exception() is not None:
                    for other in futures:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
            for future, remote_file in futures.items():
                results[remote_file.name] = future.result()
    except OSError as error:
        if error.errno not in exit_codes.STORAGE_ERRNOS:
            raise
        raise exit_codes.storage_error(
            error.filename or layout.partial_dir(config),
            f"{os.strerror(error.errno or 0)} while fetching {config} at {plan.commit[:12]}",
            needed=mirror.bytes_still_needed(layout, config, plan),
        ) from error

    current = mirror.pin_generation(layout, config, lease=False) if plan.unchanged else None
    kept = manifest.by_name if manifest else {}
    for name in plan.unchanged:
        entry = kept[name]
        if (
            current is not None
            and current.files.get(name) == entry.sha256  # facts of these very bytes only
            and not _facts_path(layout, config, entry.sha256).is_file()
        ):
            file_facts(layout, config, current.path / name, entry.sha256)
        results[name] = StagedFile(
            name, entry.path, entry.sha256, entry.size, "current", rows=entry.rows
        )

    fetched_bytes = sum(f.size for f in results.values() if f.status == "fetched")
    return StagedState(
        config=config,
        repo_id=remote.repo_id,
        commit=plan.commit,
        expected_rows=remote.expected_rows,
        added=[f.name for f in plan.added],
        changed=[f.name for f in plan.changed],
        removed=list(plan.removed),
        files=[results[name] for name in sorted(results)],
        bytes_fetched=fetched_bytes,
        download_seconds=time.monotonic() - started,
        base_generation=manifest.generation if manifest else None,
    )


class _Stopped(Exception):
    """Raised in a fetch thread to end its download when the sync is interrupted."""


def _failed(remote_file: RemoteFile, reason: str, rows: int | None = None) -> StagedFile:
    return StagedFile(
        remote_file.name,
        remote_file.path,
        remote_file.sha256,
        remote_file.size,
        "failed",
        reason,
        rows,
    )


def _identities(files: Iterable[RemoteFile | StagedFile]) -> set[tuple[str, str]]:
    return {(f.name, f.sha256) for f in files}


def _reuse_earlier_staging(layout: Layout, config: str, plan: Plan) -> None:
    """Hard-link files an earlier attempt (at another commit) already verified with the same sha256."""
    earlier = load_staged(layout, config)
    if earlier is not None:
        _reuse_staged(layout, config, plan, earlier.commit, _identities(earlier.fetched))


def _reuse_staged(
    layout: Layout, config: str, plan: Plan, commit: str, verified: set[tuple[str, str]]
) -> None:
    """Hard-link into `plan`'s staging the files staged at `commit` whose (name, sha256) is in
    `verified` and that `plan` still has to fetch."""
    if commit == plan.commit:
        return
    for remote_file in plan.to_fetch:
        source = mirror.stage_path(layout, config, commit, remote_file.name)
        target = mirror.stage_path(layout, config, plan.commit, remote_file.name)
        if (
            (remote_file.name, remote_file.sha256) in verified
            and source.is_file()
            and not target.exists()
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)


# --- gate -------------------------------------------------------------------------------------


def gate(
    layout: Layout,
    state: StagedState,
    *,
    max_row_loss: float,
    accept_row_loss: bool = False,
    accept_schema_change: bool = False,
    accept_emb_change: bool = False,
) -> list[CheckResult]:
    """One result per gate check for the candidate generation; recorded in the staged state.

    Reads fetched files from staging and unchanged ones from one pinned generation, never
    through the mirror's symlink."""
    with _pin_current(layout, state) as pinned:
        return _gate(
            layout,
            state,
            pinned,
            max_row_loss=max_row_loss,
            accept_row_loss=accept_row_loss,
            accept_schema_change=accept_schema_change,
            accept_emb_change=accept_emb_change,
        )


def _pin_current(
    layout: Layout, state: StagedState
) -> contextlib.AbstractContextManager[PinnedGeneration | None]:
    """The published generation that the candidate's unchanged files come from, leased."""
    if all(f.status != "current" for f in state.files):
        return contextlib.nullcontext(None)
    return mirror.pin_generation(layout, state.config)


def _gate(
    layout: Layout,
    state: StagedState,
    pinned: PinnedGeneration | None,
    *,
    max_row_loss: float,
    accept_row_loss: bool,
    accept_schema_change: bool,
    accept_emb_change: bool,
) -> list[CheckResult]:
    config = state.config
    manifest = load_manifest(layout, config)
    facts = [_cached_facts(layout, config, f.sha256) for f in state.files]
    per_file = {name: _combine(name, state, facts) for name in GATE_CHECKS}
    known = [
        f
        for f, staged in zip(facts, state.files, strict=True)
        if f is not None and staged.status != "failed"
    ]
    per_file[SORTED_BY_CONTRACT_KEY] = _merge(
        per_file[SORTED_BY_CONTRACT_KEY], check_sorted_across(known)
    )
    last_schema = manifest.schema if manifest else None
    per_file[SCHEMA_MATCHES_CONTRACT] = _contract(
        layout,
        state,
        pinned,
        per_file[SCHEMA_MATCHES_CONTRACT],
        last_schema,
        accept_schema_change,
    )
    per_file[SCHEMA_MATCHES_LAST_VALIDATED] = _merge(
        _schema_stable(layout, state, last_schema, accepted=accept_schema_change),
        _schema_uniform(known),
    )
    candidates = [
        MirrorFile(f.name, f.sha256, _candidate_path(layout, state, f, pinned))
        for f in state.files
        if f.status != "failed"
    ]
    changed = {f.name for f in state.fetched}
    per_file[UUID_UNIQUE] = _merge(
        per_file[UUID_UNIQUE],
        check_uuid_unique_across(changed, candidates, layout=layout, config=config),
    )
    per_file[EMB_UNCHANGED_FOR_EXISTING_UUIDS] = check_emb_unchanged(
        _replaced_files(layout, state, manifest),
        [
            MirrorFile(f.name, f.sha256, _candidate_path(layout, state, f, pinned))
            for f in state.fetched
        ],
        layout=layout,
        config=config,
        accepted=accept_emb_change,
    )
    per_file[ROWS_MATCH_CARD] = _naming_files(
        check_rows_match_card(state.total_rows, state.expected_rows), manifest, state
    )
    per_file[ROW_LOSS_WITHIN_LIMIT] = _naming_files(
        check_row_loss(
            manifest.total_rows if manifest else None,
            state.total_rows,
            max_row_loss,
            accepted=accept_row_loss,
        ),
        manifest,
        state,
    )
    results = [per_file[name] for name in GATE_CHECKS]
    state.gate = {r.check: r.passed for r in results}
    _save_staged(layout, state)
    return results


def _replaced_files(
    layout: Layout, state: StagedState, manifest: Manifest | None
) -> list[MirrorFile]:
    """The last validated generation's files that the candidate does not keep as they are
    (changed or removed upstream): the only ones whose rows a fetched file can hold anew."""
    if manifest is None:
        return []
    kept = {(f.name, f.sha256) for f in state.files if f.status == "current"}
    folder = layout.generations_dir(state.config) / manifest.generation
    return [
        MirrorFile(e.name, e.sha256, folder / e.name)
        for e in manifest.entries
        if (e.name, e.sha256) not in kept
    ]


def _candidate_path(
    layout: Layout, state: StagedState, f: StagedFile, pinned: PinnedGeneration | None
) -> Path:
    """Where the candidate's file is: staging if fetched, else the pinned generation, whose
    bytes must be the ones staged as current."""
    if f.status == "fetched":
        return mirror.stage_path(layout, state.config, state.commit, f.name)
    if pinned is None or pinned.files.get(f.name) != f.sha256:
        where = "no published generation" if pinned is None else f"generation {pinned.name}"
        raise StoreError(
            f"{state.config}: {f.name} was staged as unchanged (sha256 {f.sha256[:12]}) but "
            f"{where} does not hold those bytes: the mirror changed since this sync staged "
            "its files. Run `tol-dagster sync` again"
        )
    return pinned.path / f.name


def _combine(check: str, state: StagedState, facts: list[FileFacts | None]) -> CheckResult:
    """The per-file results of `check` over the candidate: passes when every file passed."""
    failures: list[str] = []
    for staged, file_facts_ in zip(state.files, facts, strict=True):
        if file_facts_ is None:
            failures.append(f"{staged.name}: not checked ({staged.reason})")
            continue
        for result in file_facts_.results:
            if result.check == check and not result.passed:
                failures.append(result.message)  # names its file already
    if failures:
        return CheckResult(check, False, "; ".join(failures[:10]), {"failed_files": len(failures)})
    return CheckResult(check, True, f"{len(state.files)} files pass", {"files": len(state.files)})


def _schema_stable(
    layout: Layout, state: StagedState, last: pa.Schema | None, *, accepted: bool
) -> CheckResult:
    """Fetched files keep the last validated schema (read from their footers, not cached:
    the comparison depends on the manifest, not only on the file's bytes)."""
    check = SCHEMA_MATCHES_LAST_VALIDATED
    if last is None:
        return CheckResult(check, True, "no validated schema yet (first sync)")
    failures = []
    for f in state.fetched:
        found = pq.read_schema(mirror.stage_path(layout, state.config, state.commit, f.name))
        result = check_schema(f.name, found, last, check)
        if not result.passed:
            failures.append(result)
    if not failures:
        return CheckResult(
            check, True, f"{len(state.fetched)} fetched files keep the last validated schema"
        )
    message = "; ".join(r.message for r in failures[:5])
    if accepted:
        return CheckResult(
            check, True, f"accepted (--accept-schema-change): {message}", failures[0].details
        )
    return CheckResult(
        check,
        False,
        f"{message}. If upstream changed the schema on purpose, rerun with --accept-schema-change",
        failures[0].details,
    )


def additive_extension(found: pa.Schema, contract: pa.Schema) -> bool:
    """`found` holds every contract column, in order and with its type, plus extra columns
    (as upstream revisions that add e.g. `resolution_status` do)."""
    names = [n for n in found.names if n in contract.names]
    return (
        names == contract.names
        and all(found.field(n).type == contract.field(n).type for n in contract.names)
        and len(found) > len(contract)
    )


def _contract(
    layout: Layout,
    state: StagedState,
    pinned: PinnedGeneration | None,
    per_file: CheckResult,
    last: pa.Schema | None,
    accepted: bool,
) -> CheckResult:
    """The contract check, except for files that only add columns to it, when that addition
    is accepted now (`--accept-schema-change`) or was accepted before (it is the last
    validated schema): then the extended schema is the config's contract from now on."""
    if per_file.passed:
        return per_file
    contract = expected_schema(state.config)
    refused = []
    for f in state.files:
        if f.status == "failed":
            continue
        found = pq.read_schema(_candidate_path(layout, state, f, pinned))
        if found.equals(contract):
            continue
        if additive_extension(found, contract) and (
            accepted or (last is not None and found.equals(last))
        ):
            continue
        refused.append(check_schema(f.name, found, contract, per_file.check).message)
    if refused or any(f.status == "failed" for f in state.files):
        return (
            per_file
            if not refused
            else replace(
                per_file,
                message="; ".join(refused[:10])
                + (". If upstream added columns on purpose, rerun with --accept-schema-change"),
            )
        )
    return CheckResult(
        per_file.check,
        True,
        "files extend the contract with extra columns only: accepted"
        + (" (--accept-schema-change)" if accepted else " earlier (the last validated schema)"),
        per_file.details,
    )


def _schema_uniform(facts: list[FileFacts]) -> CheckResult:
    """Every file of the generation has one schema, so globs over the mirror read it whole."""
    check = SCHEMA_MATCHES_LAST_VALIDATED
    schemas: dict[tuple[tuple[str, str], ...] | None, list[str]] = {}
    for f in facts:
        schemas.setdefault(f.schema, []).append(f.name)
    if len(schemas) <= 1:
        return CheckResult(check, True, "every file has the same schema")
    groups = "; ".join(f"{len(names)} files like {names[0]}" for names in schemas.values())
    return CheckResult(
        check,
        False,
        f"files disagree on the schema ({groups}): a mirror glob could not read them together; "
        "upstream is mid-change, wait for it to finish",
        {"groups": {names[0]: len(names) for names in schemas.values()}},
    )


def _naming_files(
    result: CheckResult, previous: Manifest | None, state: StagedState
) -> CheckResult:
    """A failed row-count check with the files whose row counts moved: a total names no file."""
    before = previous.by_name if previous else {}
    moved = [
        f"{f.name} ({before[f.name].rows:,} -> {f.rows or 0:,} rows)"
        if f.name in before
        else f"{f.name} (new, {f.rows or 0:,} rows)"
        for f in state.files
        if f.name not in before or before[f.name].rows != (f.rows or 0)
    ]
    moved += [
        f"{name} (removed, {before[name].rows:,} rows)" for name in state.removed if name in before
    ]
    if result.passed or not moved:
        return result
    shown = "; ".join(moved[:10]) + (f"; and {len(moved) - 10} more" if len(moved) > 10 else "")
    return replace(result, message=f"{result.message}. Rows changed in: {shown}")


def _merge(a: CheckResult, b: CheckResult) -> CheckResult:
    if a.passed and b.passed:
        return replace(a, details={**a.details, **b.details})
    message = "; ".join(r.message for r in (a, b) if not r.passed)
    return CheckResult(a.check, False, message, {**a.details, **b.details})


# --- publish ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    commit: str
    generation: str
    manifest: Manifest
    previous: Manifest | None
    changed: bool

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes

    def changes_markdown(self) -> str:
        if not self.changed:
            return "Already current: nothing published."
        before = self.previous.by_name if self.previous else {}
        after = self.manifest.by_name
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(n for n in set(after) & set(before) if after[n].sha256 != before[n].sha256)
        rows_before = self.previous.total_rows if self.previous else 0
        return (
            f"commit `{self.commit[:12]}`, generation `{self.generation}`: "
            f"{len(added)} added, {len(changed)} changed, {len(removed)} removed; "
            f"rows {rows_before:,} -> {self.manifest.total_rows:,}"
        )


def publish(layout: Layout, config: str, *, key: str = LOCAL_KEY, log: Log = print) -> Published:
    """Switch the mirror to the generation staged under `key`, atomically; only after the gate
    passed, and only on top of the generation it was planned against."""
    with config_lock(layout, config):
        state = load_staged(layout, config, key)
        if state is None:
            raise ValidationFailed(
                f"{config}: nothing is staged by run {key}; materialize `staged` and `mirror` "
                "together (tol-dagster sync, or the resync job)"
            )
        if not state.gate_passed or state.failed:
            refused = [name for name, passed in state.gate.items() if not passed] or ["not run"]
            raise ValidationFailed(
                f"{config}: the gate did not pass for commit {state.commit[:12]} ({', '.join(refused)}); "
                "the mirror keeps its last validated generation"
            )
        remote = state.remote()
        previous = load_manifest(layout, config)
        plan = plan_sync(previous, remote)
        if (
            previous is not None
            and plan.is_noop
            and previous.upstream_commit == remote.commit
            and previous.card_expected_rows == remote.expected_rows
        ):
            log(f"{config}: already at {remote.commit[:12]}; nothing to publish")
            return Published(remote.commit, previous.generation, previous, previous, changed=False)
        found = previous.generation if previous else None
        if found != state.base_generation:
            raise ResyncConflict(
                f"{config}: run {key} staged commit {state.commit[:12]} against generation "
                f"{state.base_generation or '(none)'}, but the mirror is now at {found} "
                f"(commit {previous.upstream_commit[:12] if previous else '?'}): another resync "
                "published in between, so nothing was published; sync again"
            )

        with _pin_current(layout, state) as pinned:
            sources: dict[str, Path] = {}
            for f in state.files:
                sources[f.name] = _candidate_path(layout, state, f, pinned)
            generation = mirror.publish_generation(
                layout,
                config,
                commit=remote.commit,
                files=sources,
                sha256s={f.name: f.sha256 for f in state.files},
            )
        schema_json = (
            schema_to_json(pq.read_schema(sources[state.fetched[0].name]))
            if state.fetched
            else (previous.schema_json if previous else None)
        )
        manifest = manifest_after(
            plan,
            previous,
            remote,
            generation=generation.name,
            rows={f.name: f.rows or 0 for f in state.fetched},
            schema_json=schema_json,
            validated_at=utc_timestamp(),
        )
        save_manifest(layout, manifest)
        report = mirror.cleanup(layout, config, keep_commit=None, wanted_sha256s=())
        kept = {e.sha256 for m in (manifest, previous) if m is not None for e in m.entries}
        freed = report.bytes_freed + mirror.prune_derived(layout, config, kept)
        log(
            f"{config}: published {generation.name} ({len(manifest.entries)} files, {manifest.total_rows:,} rows); "
            f"cleanup freed {freed / 1e6:,.1f} MB"
        )
        return Published(remote.commit, generation.name, manifest, previous, changed=True)


# --- audit ------------------------------------------------------------------------------------


#: How often the audit re-reads the mirror and the manifest to find them describing one generation.
AUDIT_SNAPSHOT_TRIES = 5


def _audit_subject(layout: Layout, config: str) -> tuple[Path | None, Manifest | None]:
    """The current generation (resolved once) and the manifest that goes with it, read without
    the lock (a resync holds it for the whole download): re-read until the symlink did not move
    around the manifest's read."""
    for _ in range(AUDIT_SNAPSHOT_TRIES):
        before = _resolved_generation(layout, config)
        manifest = load_manifest(layout, config)
        if _resolved_generation(layout, config) == before:
            return before, manifest
    return before, manifest  # still moving: the audit reports the mismatch it finds


def _resolved_generation(layout: Layout, config: str) -> Path | None:
    current = mirror.current_generation(layout, config)
    return None if current is None else current.resolve()


def _record_drift(
    layout: Layout, config: str, audited: Path, manifest: Manifest, drifted: set[str]
) -> bool:
    """Drop `drifted` from the manifest so the next resync fetches them again, only if the
    mirror and the manifest are still the ones audited (compared under the lock): an audit
    never rolls back a generation published while it hashed. True if recorded."""
    with config_lock(layout, config):
        if (
            _resolved_generation(layout, config) != audited
            or load_manifest(layout, config) != manifest
        ):
            return False
        save_manifest(layout, manifest.without(drifted))
        return True


def _superseded(layout: Layout, config: str, audited: Path | None) -> str | None:
    """What replaced the audited generation while it was hashed (None: nothing did)."""
    now = _resolved_generation(layout, config)
    if now == audited:
        return None
    return (
        f"superseded during audit: generation {audited.name if audited else 'none'} was "
        f"replaced by {now.name if now else 'none'} while it was hashed; nothing was recorded, "
        "the new generation is not audited yet (run the audit again)"
    )


def audit(layout: Layout, config: str, client: HubClient | None = None) -> CheckResult:
    """Re-hash the mirror against the manifest and, given a client, the manifest against upstream.

    Read-only but for one case: drifted files are dropped from the manifest (so the next resync
    fetches them again), and only while the audited generation is still the published one."""
    generation, manifest = _audit_subject(layout, config)
    if manifest is None:
        return CheckResult(
            AUDIT_CHECK, False, f"{config}: no mirror yet; run `tol-dagster sync`", {}
        )
    report = mirror.audit_mirror(layout, config, manifest, generation=generation)
    problems = [f"{d.name}: {d.reason}" for d in report.drifted]
    behind = ""
    if client is not None:
        try:
            plan = plan_sync(manifest, client.remote_config(config))
            if not plan.is_noop:
                behind = f"; upstream differs: {plan_summary(plan)}"
        except UpstreamError as error:
            behind = f"; upstream not compared: {error}"
    details: dict[str, object] = {
        "generation": generation.name if generation else None,
        "files_checked": report.files_checked,
        "bytes_hashed": report.bytes_hashed,
        "drifted": problems,
    }
    drifted = {d.name for d in report.drifted} & set(manifest.by_name)
    recorded = (
        generation is not None
        and bool(drifted)
        and _record_drift(layout, config, generation, manifest, drifted)
    )
    if recorded:
        behind += f"; the next resync fetches {len(drifted)} drifted files again"
    superseded = None if recorded else _superseded(layout, config, generation)
    if superseded is not None:
        details["superseded"] = True
        behind += f"; {superseded}"
    elif drifted and not recorded:
        behind += "; the manifest changed during the audit (another audit?): nothing was recorded"
    if problems:
        return CheckResult(AUDIT_CHECK, False, "; ".join(problems[:10]) + behind, details)
    return CheckResult(
        AUDIT_CHECK, True, f"{report.files_checked} files match the manifest{behind}", details
    )


# --- what a published resync changed, by uuid ----------------------------------------------------


def _revision_diff_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "revision_diff.json"


def record_revision_diff(layout: Layout, config: str, published: Published) -> RevisionDiff | None:
    """Rows added and removed per taxon by the resync just published (reads changed files only)."""
    previous = published.previous
    if not published.changed or previous is None:
        return None
    old_dir = layout.generations_dir(config) / previous.generation
    if not old_dir.is_dir():
        return None
    new_dir = layout.generations_dir(config) / published.generation  # not the symlink: pinned
    old = [MirrorFile(e.name, e.sha256, old_dir / e.name) for e in previous.entries]
    new = [MirrorFile(e.name, e.sha256, new_dir / e.name) for e in published.manifest.entries]
    diff = diff_generations(old, new)
    document = {
        "from_commit": previous.upstream_commit,
        "to_commit": published.commit,
        **diff.to_dict(limit=200),
    }
    write_atomic(_revision_diff_path(layout, config), json.dumps(document, indent=1).encode())
    return diff


def last_revision_diff(layout: Layout, config: str) -> dict[str, object] | None:
    path = _revision_diff_path(layout, config)
    return json.loads(path.read_text()) if path.is_file() else None

"""Stage: fetch, verify and inspect what upstream's commit changed, into a candidate generation.

The first of the resync's three steps, kept apart so Dagster can put the gate's blocking checks
between staging and publishing. Only files whose sha256 differs from the manifest are fetched
(see `plan`); files already staged, or held by a kept generation, are not fetched again. It is
three functions so that Dagster can spread the per-file work: `prepare` plans under the lock,
`fetch_batch` fetches and inspects some of the files (batches: `tol_dagster.batches`), anywhere,
and `conclude` gathers the batches into the staged state.

It is also where drift is repaired (the audit only reports it): under the lock, every published
file is stat'ed (missing, another size) and the suspects the last audit named are re-hashed;
those that no longer hold the manifest's bytes are fetched again, those that match again are not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from tol_dagster import progress
from tol_dagster.errors import RevisionGone, StoreError
from tol_dagster.hub.client import HubClient, RemoteConfig, RemoteFile
from tol_dagster.resync import reuse
from tol_dagster.resync.facts import cached_facts, file_facts
from tol_dagster.resync.fetch import Log, fetch_all
from tol_dagster.resync.plan import Plan, bytes_still_needed, plan_summary, plan_sync
from tol_dagster.resync.state import (
    LOCAL_KEY,
    StagedFile,
    StagedState,
    config_lock,
    load_remote,
    load_staged,
    refresh_remote,
    save_staged,
)
from tol_dagster.store.disk import check_free_disk
from tol_dagster.store.drift import drifted_entries
from tol_dagster.store.file_cache import forget_content
from tol_dagster.store.generations import current_generation, pin_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.store.staging import stage_path

#: How often a config may be re-planned when its pinned commit vanishes mid-sync.
MAX_REPLANS = 3


@dataclass(frozen=True)
class Staging:
    """What `prepare` decided, for the fetch batches and `conclude`: small values only, so each
    can run in another process (or on another machine sharing `TOL_HOME`)."""

    remote: RemoteConfig
    plan: Plan
    base_generation: str | None
    #: Wall-clock start (epoch seconds): batches may run in other processes.
    started: float


@dataclass(frozen=True)
class Batch:
    """What one fetch step brought: its files by name, or the commit it found gone."""

    files: dict[str, StagedFile]
    gone: str | None = None


def stage(
    layout: Layout,
    client: HubClient,
    config: str,
    *,
    commit: str | None = None,
    max_parallel: int = 4,
    key: str = LOCAL_KEY,
    suspects: Collection[str] = (),
    log: Log = print,
) -> StagedState:
    """Fetch, verify and inspect every file of upstream's commit that the mirror lacks, in this
    process: `prepare`, one `fetch_batch` of every file, `conclude` (Dagster runs the same three
    as steps, the fetches in batches)."""
    staging = prepare(layout, client, config, commit=commit, suspects=suspects, log=log)
    fetched = fetch_batch(
        layout, client, staging, staging.plan.to_fetch, max_parallel=max_parallel, log=log
    )
    return conclude(layout, client, staging, [fetched], key=key, max_parallel=max_parallel, log=log)


def prepare(
    layout: Layout,
    client: HubClient,
    config: str,
    *,
    commit: str | None = None,
    suspects: Collection[str] = (),
    log: Log = print,
) -> Staging:
    """Plan what upstream's commit asks of the mirror and ready its staging, under the lock.

    Unchanged files cost no request; files already staged, or held by a kept generation, are
    linked into the staging and not fetched again. Published files that drifted from the
    manifest are planned again: every one is stat'ed, and `suspects` (the files the last audit
    found drifted) are re-hashed too.
    """
    say = progress.told(log)
    with config_lock(layout, config):
        remote = load_remote(layout, config) or refresh_remote(layout, client, config)
        if commit and commit != remote.commit:
            say(
                f"upstream moved from {commit[:12]} to {remote.commit[:12]} since the request; syncing the newer commit"
            )
        return _prepare_commit(layout, remote, None, suspects=suspects, log=log)


def fetch_batch(
    layout: Layout,
    client: HubClient,
    staging: Staging,
    files: Sequence[RemoteFile],
    *,
    max_parallel: int,
    log: Log = print,
) -> Batch:
    """Fetch (unless staged), verify and inspect `files` of the plan; their facts are cached by
    sha256. Takes no lock: each batch writes only its own files' staging and cache entries, and
    the run's lease keeps other resyncs out. A commit gone upstream (force-push) is reported,
    for `conclude` to re-plan."""
    config = staging.remote.config
    try:
        return Batch(
            fetch_all(
                layout, client, config, staging.plan, files, max_parallel=max_parallel, log=log
            )
        )
    except RevisionGone as gone:
        return Batch({}, gone=str(gone))


def conclude(
    layout: Layout,
    client: HubClient,
    staging: Staging,
    fetched: Iterable[Batch],
    *,
    key: str = LOCAL_KEY,
    max_parallel: int = 4,
    log: Log = print,
) -> StagedState:
    """The staged state of the plan from its batches, saved under `key` (the run id).

    A file that failed its own checks was quarantined and is marked failed (the gate then
    refuses). If the commit vanished mid-sync (force-push), the plan is made again against the
    new head, in this process, keeping the files that already landed.
    """
    batches = list(fetched)
    with config_lock(layout, staging.remote.config):
        gone = next((b.gone for b in batches if b.gone), None)
        if gone is None:
            results = {name: f for b in batches for name, f in b.files.items()}
            state = _staged_state(layout, staging, results)
        else:
            state = _replanned(layout, client, staging, gone, max_parallel=max_parallel, log=log)
        state.key = key
        save_staged(layout, state)
        return state


def _replanned(
    layout: Layout,
    client: HubClient,
    staging: Staging,
    gone: str,
    *,
    max_parallel: int,
    log: Log,
) -> StagedState:
    """Stage the new head after `staging`'s commit vanished, at most `MAX_REPLANS` times."""
    say = progress.told(log)
    superseded = staging.remote
    for replans in range(1, MAX_REPLANS + 1):
        say(f"{gone}; re-planning against the new head")
        remote = refresh_remote(layout, client, superseded.config)
        again = _prepare_commit(layout, remote, superseded, suspects=(), log=log)
        batch = fetch_batch(
            layout, client, again, again.plan.to_fetch, max_parallel=max_parallel, log=log
        )
        if batch.gone is None:
            state = _staged_state(layout, again, batch.files)
            state.replans = replans
            return state
        superseded, gone = remote, batch.gone
    raise RevisionGone(gone)


def _prepare_commit(
    layout: Layout,
    remote: RemoteConfig,
    superseded: RemoteConfig | None,
    *,
    suspects: Collection[str],
    log: Log,
) -> Staging:
    config = remote.config
    manifest = load_manifest(layout, config)
    say = progress.told(log)  # what the plan is and why: for a person watching too
    plan = plan_sync(manifest, remote, drifted=_drifted(layout, manifest, remote, suspects, say))
    say(f"{config} @ {remote.commit[:12]}: {plan_summary(plan)}")
    _prepare_staging(layout, config, plan, superseded, log=say)
    _forget_repaired(layout, config, plan, log=say)
    progress.start("fetch", files=len(plan.to_fetch), bytes=plan.bytes_to_fetch)
    return Staging(remote, plan, manifest.generation if manifest else None, time.time())


def _staged_state(layout: Layout, staging: Staging, results: dict[str, StagedFile]) -> StagedState:
    """The candidate generation: the batches' files and the ones the plan keeps."""
    remote, plan = staging.remote, staging.plan
    missing = sorted({f.name for f in plan.to_fetch} - set(results))
    if missing:
        raise StoreError(
            f"{remote.config}: no fetch step reported {', '.join(missing[:5])}: the run lost a "
            "step's result. Run `tol-dagster sync` again (what landed is kept)"
        )
    results = {**results, **_kept_unchanged(layout, remote.config, plan)}
    return StagedState(
        config=remote.config,
        repo_id=remote.repo_id,
        commit=plan.commit,
        expected_rows=remote.expected_rows,
        added=[f.name for f in plan.added],
        changed=[f.name for f in plan.changed],
        removed=list(plan.removed),
        files=[results[name] for name in sorted(results)],
        bytes_fetched=sum(f.size for f in results.values() if f.downloaded),
        download_seconds=time.time() - staging.started,
        base_generation=staging.base_generation,
        repaired=[f.name for f in plan.repaired],
    )


def _drifted(
    layout: Layout,
    manifest: Manifest | None,
    remote: RemoteConfig,
    suspects: Collection[str],
    log: Log,
) -> set[str]:
    """The files unchanged upstream whose published copy no longer holds the manifest's bytes:
    missing or another size (a stat each), or, for the `suspects`, other bytes (re-hashed)."""
    if manifest is None:
        return set()
    unchanged = [manifest.by_name[name] for name in plan_sync(manifest, remote).unchanged]
    rehash = {e.name for e in unchanged} & set(suspects)
    generation = current_generation(layout, manifest.config)
    found = {d.name: d.reason for d in drifted_entries(generation, unchanged, rehash=rehash)}
    for name, reason in sorted(found.items()):
        log(f"{name} drifted from the manifest ({reason}): fetching it again")
    matching = sorted(rehash - set(found))  # repaired since the audit, or a stale report
    if matching:
        log(
            f"{len(matching)} files the last audit found drifted match the manifest again, "
            f"not fetched: {', '.join(matching)}"
        )
    return set(found)


def _prepare_staging(
    layout: Layout, config: str, plan: Plan, superseded: RemoteConfig | None, *, log: Log
) -> None:
    """Link into `plan`'s staging what earlier attempts and kept generations already hold, then
    refuse if the disk cannot take the rest."""
    _reuse_earlier_staging(layout, config, plan)
    if superseded is not None:
        # Files that landed before the commit vanished were verified against its sha256s.
        _reuse_staged(layout, config, plan, superseded.commit, _identities(superseded.files))
    reuse.link_kept_contents(layout, config, plan, log=log)
    check_free_disk(layout.store_dir(config), bytes_still_needed(layout, config, plan))


def _forget_repaired(layout: Layout, config: str, plan: Plan, *, log: Log) -> None:
    """Drop what was kept for the contents of the drifted files `plan` fetches again (their
    gate's facts, their derived tables' parts): the parts may have been computed from the
    drifted bytes, and are kept under the sha256 the fresh copy has too. The gate inspects
    the fresh copy whole, and the next derived build computes the parts anew from it."""
    for remote_file in plan.repaired:
        if forget_content(layout, config, remote_file.sha256):
            log(
                f"{remote_file.name}: what was computed from its drifted copy is dropped, "
                "to be computed anew from the fresh one"
            )


def _kept_unchanged(layout: Layout, config: str, plan: Plan) -> dict[str, StagedFile]:
    """The files `plan` keeps as they are, with their facts computed if the cache lacks them."""
    current = pin_generation(layout, config, lease=False) if plan.unchanged else None
    manifest = load_manifest(layout, config) if plan.unchanged else None
    kept = manifest.by_name if manifest else {}
    results = {}
    for name in plan.unchanged:
        entry = kept[name]
        if (
            current is not None
            and current.files.get(name) == entry.sha256  # facts of these very bytes only
            and cached_facts(layout, config, entry.sha256) is None  # none, or damaged
        ):
            file_facts(layout, config, current.path / name, entry.sha256)
        results[name] = StagedFile(
            name, entry.path, entry.sha256, entry.size, "current", rows=entry.rows
        )
    return results


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
        source = stage_path(layout, config, commit, remote_file.name)
        target = stage_path(layout, config, plan.commit, remote_file.name)
        if (
            (remote_file.name, remote_file.sha256) in verified
            and source.is_file()
            and not target.exists()
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)

"""Stage: fetch, verify and inspect what upstream's commit changed, into a candidate generation.

The first of the resync's three steps, kept apart so Dagster can put the gate's blocking checks
between staging and publishing. Only files whose sha256 differs from the manifest are fetched
(see `plan`); files already staged, or held by a kept generation, are not fetched again.

It is also where drift is repaired (the audit only reports it): under the lock, every published
file is stat'ed (missing, another size) and the suspects the last audit named are re-hashed;
those that no longer hold the manifest's bytes are fetched again, those that match again are not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable

from tol_dagster import progress
from tol_dagster.errors import RevisionGone
from tol_dagster.hub.client import HubClient, RemoteConfig, RemoteFile
from tol_dagster.resync import reuse
from tol_dagster.resync.facts import facts_path, file_facts
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
from tol_dagster.store.generations import current_generation, pin_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.store.staging import stage_path

#: How often a config may be re-planned when its pinned commit vanishes mid-sync.
MAX_REPLANS = 3


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
    """Fetch, verify and inspect every file of upstream's commit that the mirror lacks.

    Unchanged files cost no request; files that passed in an earlier attempt stay staged, so a
    retry fetches only what is still missing. A file that fails is quarantined with its reason
    and marked failed (the gate then refuses). If the commit vanishes mid-sync (force-push),
    the plan is made again against the new head. The state is saved under `key` (the run id).
    Published files that drifted from the manifest are fetched again: every one is stat'ed,
    and `suspects` (the files the last audit found drifted) are re-hashed too.
    """
    say = progress.told(log)
    with config_lock(layout, config):
        remote = load_remote(layout, config) or refresh_remote(layout, client, config)
        if commit and commit != remote.commit:
            say(
                f"upstream moved from {commit[:12]} to {remote.commit[:12]} since the request; syncing the newer commit"
            )
        superseded: RemoteConfig | None = None
        for replans in range(MAX_REPLANS + 1):
            try:
                state = _stage_commit(
                    layout,
                    client,
                    remote,
                    superseded,
                    suspects=suspects,
                    max_parallel=max_parallel,
                    log=log,
                )
            except RevisionGone as gone:
                if replans == MAX_REPLANS:
                    raise
                say(f"{gone}; re-planning against the new head")
                superseded, remote = remote, refresh_remote(layout, client, config)
                continue
            state.replans = replans
            state.key = key
            save_staged(layout, state)
            return state
    raise AssertionError("unreachable")


def _stage_commit(
    layout: Layout,
    client: HubClient,
    remote: RemoteConfig,
    superseded: RemoteConfig | None,
    *,
    suspects: Collection[str],
    max_parallel: int,
    log: Log,
) -> StagedState:
    config = remote.config
    manifest = load_manifest(layout, config)
    say = progress.told(log)  # what the plan is and why: for a person watching too
    plan = plan_sync(manifest, remote, drifted=_drifted(layout, manifest, remote, suspects, say))
    say(f"{config} @ {remote.commit[:12]}: {plan_summary(plan)}")
    _prepare_staging(layout, config, plan, superseded, log=say)
    started = time.monotonic()
    # Its periodic lines go to the run log only: a person watching has the bar.
    results = fetch_all(layout, client, config, plan, max_parallel=max_parallel, log=log)
    results.update(_kept_unchanged(layout, config, plan, manifest))
    return StagedState(
        config=config,
        repo_id=remote.repo_id,
        commit=plan.commit,
        expected_rows=remote.expected_rows,
        added=[f.name for f in plan.added],
        changed=[f.name for f in plan.changed],
        removed=list(plan.removed),
        files=[results[name] for name in sorted(results)],
        bytes_fetched=sum(f.size for f in results.values() if f.status == "fetched"),
        download_seconds=time.monotonic() - started,
        base_generation=manifest.generation if manifest else None,
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


def _kept_unchanged(
    layout: Layout, config: str, plan: Plan, manifest: Manifest | None
) -> dict[str, StagedFile]:
    """The files `plan` keeps as they are, with their facts computed if the cache lacks them."""
    current = pin_generation(layout, config, lease=False) if plan.unchanged else None
    kept = manifest.by_name if manifest else {}
    results = {}
    for name in plan.unchanged:
        entry = kept[name]
        if (
            current is not None
            and current.files.get(name) == entry.sha256  # facts of these very bytes only
            and not facts_path(layout, config, entry.sha256).is_file()
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

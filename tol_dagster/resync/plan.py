"""The plan of a resync: what upstream's listing asks of the mirror, diffed against the manifest.

Diffing by sha256 (and size) is what makes an in-sync check free: unchanged files cost no
request at all. A file unchanged upstream whose published copy drifted from the manifest (found
by the resync's stat of every file, or by re-hashing the files the last audit named) is
`repaired`: fetched again like a changed one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from tol_dagster.errors import UpstreamError
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, ManifestEntry, load_manifest
from tol_dagster.store.staging import partial_path, staged_files


@dataclass(frozen=True)
class Plan:
    """What a sync to `commit` must do: fetch `to_fetch`, drop `removed`, keep `unchanged`."""

    commit: str
    added: tuple[RemoteFile, ...]
    changed: tuple[RemoteFile, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    #: Unchanged upstream, but the published copy no longer holds the manifest's bytes.
    repaired: tuple[RemoteFile, ...] = ()

    @property
    def to_fetch(self) -> tuple[RemoteFile, ...]:
        return tuple(sorted((*self.added, *self.changed, *self.repaired), key=lambda f: f.name))

    @property
    def bytes_to_fetch(self) -> int:
        return sum(remote_file.size for remote_file in self.to_fetch)

    @property
    def is_noop(self) -> bool:
        """No file to fetch or drop (the commit may still differ: it touched other paths)."""
        return not (self.added or self.changed or self.removed or self.repaired)


def _by_name(remote: RemoteConfig) -> dict[str, RemoteFile]:
    found: dict[str, RemoteFile] = {}
    for remote_file in remote.files:
        if remote_file.name in found:
            raise UpstreamError(
                f"{remote.repo_id}@{remote.commit}: {remote_file.path} and "
                f"{found[remote_file.name].path} share a file name; the mirror of "
                f"{remote.config} is one flat folder and cannot hold both. Report it upstream."
            )
        found[remote_file.name] = remote_file
    return found


def plan_sync(
    manifest: Manifest | None, remote: RemoteConfig, *, drifted: Collection[str] = ()
) -> Plan:
    """Diff the remote listing against the manifest by sha256 (and size); no request is made.
    Files named in `drifted` that are unchanged upstream are planned as `repaired`."""
    if manifest is not None and manifest.config != remote.config:
        raise ValueError(
            f"cannot plan config {remote.config!r} against the manifest of {manifest.config!r}"
        )
    remote_by_name = _by_name(remote)
    local = {} if manifest is None else manifest.by_name
    added, changed, unchanged, repaired = [], [], [], []
    for name in sorted(remote_by_name):
        remote_file, entry = remote_by_name[name], local.get(name)
        if entry is None:
            added.append(remote_file)
        elif (entry.sha256, entry.size) != (remote_file.sha256, remote_file.size):
            changed.append(remote_file)
        elif name in drifted:
            repaired.append(remote_file)
        else:
            unchanged.append(name)
    return Plan(
        commit=remote.commit,
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(sorted(set(local) - set(remote_by_name))),
        unchanged=tuple(unchanged),
        repaired=tuple(repaired),
    )


def manifest_after(
    plan: Plan,
    previous: Manifest | None,
    remote: RemoteConfig,
    *,
    generation: str,
    rows: Mapping[str, int],
    schema_json: str | None,
    validated_at: str,
) -> Manifest:
    """The manifest of the generation that publishes `plan`: fetched files get new entries
    (their `rows` by name are required), unchanged files keep theirs."""
    kept = {} if previous is None else previous.by_name
    missing = [f.name for f in plan.to_fetch if f.name not in rows]
    if missing:
        raise ValueError(f"no row count for fetched files: {', '.join(missing)}")
    fetched = [
        ManifestEntry(
            name=f.name,
            path=f.path,
            sha256=f.sha256,
            size=f.size,
            rows=rows[f.name],
            upstream_commit=plan.commit,
            validated_at=validated_at,
        )
        for f in plan.to_fetch
    ]
    return Manifest(
        config=remote.config,
        repo_id=remote.repo_id,
        upstream_commit=plan.commit,
        generation=generation,
        card_expected_rows=remote.expected_rows,
        schema_json=schema_json,
        validated_at=validated_at,
        entries=(*fetched, *(kept[name] for name in plan.unchanged)),
    )


def plan_summary(plan: Plan) -> str:
    repaired = f", {len(plan.repaired)} drifted fetched again" if plan.repaired else ""
    return (
        f"{len(plan.added)} added, {len(plan.changed)} changed, {len(plan.removed)} removed, "
        f"{len(plan.unchanged)} unchanged{repaired} ({plan.bytes_to_fetch / 1e6:,.1f} MB to fetch)"
    )


def lacked_at_check(manifest: Manifest | None, plan: Plan) -> str:
    """What the mirror lacked when upstream was read, worded so that it is not taken for the
    gap that remains after a later resync published (the `remote` asset shows it)."""
    fetch = f"{len(plan.to_fetch)} files ({plan.bytes_to_fetch / 1e6:,.1f} MB)"
    if manifest is None:
        return f"At this check there was no mirror yet: a first sync fetches {fetch}."
    held = f"the mirror (generation {manifest.generation}, commit {manifest.upstream_commit[:10]})"
    if plan.is_noop:
        return f"At this check {held} already held every file of this commit."
    return (
        f"At this check {held} lacked {fetch}: {plan_summary(plan)}. A resync fetches them; "
        "`mirror` shows what is published now."
    )


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
    if manifest.upstream_commit == remote.commit:
        return Decision(False, f"in sync: the mirror is at {remote.commit[:10]} already")
    return Decision(
        False,
        f"in sync: commit {remote.commit[:10]} changed no file of {remote.config} "
        f"(mirror published at {manifest.upstream_commit[:10]}, same files)",
    )

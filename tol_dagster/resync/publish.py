"""Publish: switch the mirror to the staged candidate's generation, atomically, and write its
manifest; only after the gate passed, and only on top of the generation it was planned against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from tol_dagster.errors import ResyncConflict, ValidationFailed
from tol_dagster.resync.fetch import Log
from tol_dagster.resync.plan import manifest_after, plan_sync
from tol_dagster.resync.state import (
    LOCAL_KEY,
    StagedState,
    candidate_path,
    config_lock,
    load_staged,
    pin_current,
)
from tol_dagster.settings import generation_grace_s
from tol_dagster.store.cleanup import cleanup, prune_derived
from tol_dagster.store.generations import publish_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import (
    Manifest,
    load_manifest,
    save_manifest,
    schema_to_json,
    utc_timestamp,
)


@dataclass(frozen=True)
class Published:
    commit: str
    generation: str
    manifest: Manifest
    previous: Manifest | None
    changed: bool
    #: The files whose bytes this publish brought (added, changed, fetched again after drift).
    fetched: tuple[str, ...] = ()

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
        state = _gated_state(layout, config, key)
        remote = state.remote()
        previous = load_manifest(layout, config)
        plan = plan_sync(previous, remote, drifted=state.repaired)
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
        generation, sources = _publish_files(layout, state)
        manifest = manifest_after(
            plan,
            previous,
            remote,
            generation=generation.name,
            rows={f.name: f.rows or 0 for f in state.fetched},
            schema_json=_schema_json(state, sources, previous),
            validated_at=utc_timestamp(),
        )
        save_manifest(layout, manifest)
        freed = _clean_after(layout, config, manifest, previous)
        log(
            f"{config}: published {generation.name} ({len(manifest.entries)} files, {manifest.total_rows:,} rows); "
            f"cleanup freed {freed / 1e6:,.1f} MB"
        )
        fetched = tuple(f.name for f in state.fetched)
        return Published(remote.commit, generation.name, manifest, previous, True, fetched)


def _gated_state(layout: Layout, config: str, key: str) -> StagedState:
    """The state staged under `key`, if its gate passed; else why nothing is published."""
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
    return state


def _publish_files(layout: Layout, state: StagedState) -> tuple[Path, dict[str, Path]]:
    """The candidate's files published as a new generation; with each file's source."""
    with pin_current(layout, state) as pinned:
        sources = {f.name: candidate_path(layout, state, f, pinned) for f in state.files}
        generation = publish_generation(
            layout,
            state.config,
            commit=state.commit,
            files=sources,
            sha256s={f.name: f.sha256 for f in state.files},
        )
    return generation, sources


def _schema_json(
    state: StagedState, sources: dict[str, Path], previous: Manifest | None
) -> str | None:
    """The schema the new manifest records: a fetched file's, else the last validated one."""
    if state.fetched:
        return schema_to_json(pq.read_schema(sources[state.fetched[0].name]))
    return previous.schema_json if previous else None


def _clean_after(layout: Layout, config: str, manifest: Manifest, previous: Manifest | None) -> int:
    """Remove what the publish made unneeded (staging, partials, superseded generations past
    TOL_GENERATION_GRACE_S, results of contents no longer kept); the bytes freed."""
    report = cleanup(
        layout, config, keep_commit=None, wanted_sha256s=(), grace_s=generation_grace_s()
    )
    kept = {e.sha256 for m in (manifest, previous) if m is not None for e in m.entries}
    return report.bytes_freed + prune_derived(layout, config, kept)

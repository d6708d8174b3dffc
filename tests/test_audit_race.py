"""The mirror's audit (the `mirror_matches_manifest` check) hashes for minutes on the real
data: a publish in that time must win. The audit hashes the generation it resolved once and
writes nothing at all: it names the drifted files, and the next resync repairs them (see
test_drift_repair.py), so it can never roll a newer generation back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from resync_testing import (
    CONFIG,
    User,
    core_sync,
    dagster_home,
    file_names,
    manifest,
    mirror_view,
    synced,
    synced_home,
    user,
    valid_edit,
)

from tol_dagster.hub.client import HubClient
from tol_dagster.resync import audit
from tol_dagster.store import drift, generations
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.manifest import Manifest

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

WRONG = "0" * 64


def hashing(
    monkeypatch: pytest.MonkeyPatch, drifted: str, during: Callable[[], None] | None = None
) -> list[Path]:
    """The audit's hashing, with `drifted` hashing wrong (bit rot) and `during` run before the
    first file is hashed (a publish racing the audit). Returns the paths hashed."""
    hashed: list[Path] = []

    def fake(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
        if not hashed and during is not None:
            during()
        hashed.append(path)
        return WRONG if path.name == drifted else sha256_file(path, on_bytes)

    monkeypatch.setattr(drift, "sha256_file", fake)
    return hashed


def test_drift_found_by_an_undisturbed_audit_is_named_for_the_next_resync_and_not_written(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = synced.layout
    before = manifest(layout)
    rotten = file_names(synced.root)[0]
    hashing(monkeypatch, rotten)

    result = audit.audit(layout, CONFIG)

    assert not result.passed
    assert rotten in result.message
    assert "the next resync re-verifies these 1 drifted files and fetches them again" in (
        result.message
    )
    assert result.details[audit.DRIFTED_FILES] == [rotten]
    assert "superseded" not in result.message
    assert manifest(layout) == before, "the audit edited the manifest"


def test_an_audit_racing_a_publish_leaves_the_newer_manifest_and_generation_untouched(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = synced.layout
    audited = generations.current_generation(layout, CONFIG)
    assert audited is not None
    rotten = file_names(synced.root)[0]
    valid_edit(synced.root, file_names(synced.root)[1])
    newer: list[Manifest] = []

    def publish() -> None:
        client = HubClient(synced.hub.endpoint, synced.hub.repo_id, None)
        core_sync(layout, client)
        newer.append(manifest(layout))

    hashed = hashing(monkeypatch, rotten, during=publish)

    result = audit.audit(layout, CONFIG)

    [published] = newer
    assert published.generation != audited.name, "the race did publish a new generation"
    assert manifest(layout) == published, "the audit rolled the manifest back or edited it"
    assert mirror_view(layout).target.endswith(published.generation)
    assert {p.parent.resolve() for p in hashed} == {audited.resolve()}, (
        "the audit hashed files of another generation than the one it resolved"
    )
    assert "superseded during audit" in result.message
    assert audited.name in result.message and published.generation in result.message
    assert result.details["superseded"] is True
    assert not result.passed, "the drift it found is still reported"
    assert result.details[audit.DRIFTED_FILES] == [rotten], "for the next resync to re-verify"


def test_an_audit_racing_a_publish_without_drift_passes_and_says_so(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = synced.layout
    valid_edit(synced.root, file_names(synced.root)[1])
    client = HubClient(synced.hub.endpoint, synced.hub.repo_id, None)
    newer: list[Manifest] = []
    hashing(monkeypatch, "none", during=lambda: newer.append(core_sync(layout, client).manifest))

    result = audit.audit(layout, CONFIG)

    assert manifest(layout) == newer[0]
    assert result.passed
    assert "superseded during audit" in result.message

"""A file reverted upstream to bytes a kept generation still holds is linked, not downloaded."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from resync_testing import (
    CONFIG,
    User,
    card_rows,
    dagster_home,
    file_names,
    manifest,
    mirror_view,
    replace_upstream,
    set_card_rows,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)

from tol_dagster.hub.remote import RemoteFile
from tol_dagster.resync.plan import Plan
from tol_dagster.resync.reuse import link_kept_contents
from tol_dagster.store.generations import previous_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.staging import stage_path

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def test_a_file_reverted_upstream_is_linked_from_the_kept_generation(synced: User) -> None:
    name = file_names(synced.root)[1]
    original = synced.folder / name
    kept_copy = synced.root.parent / f"{name}.original"
    shutil.copy(original, kept_copy)
    rows = card_rows(synced.root)
    valid_edit(synced.root, name)
    assert synced.sync().code == 0
    previous = previous_generation(synced.layout, CONFIG)
    assert previous is not None and (previous / name).is_file(), "the old bytes are kept"
    kept_inode = (previous / name).stat().st_ino

    replace_upstream(original, lambda temp: shutil.copy(kept_copy, temp))
    set_card_rows(synced.root, rows)
    synced.reset_counts()
    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0), (
        f"the reverted file was downloaded again: {synced.requests()}"
    )
    assert "linked, not downloaded" in outcome.text
    view = mirror_view(synced.layout)
    assert view.sha256s == upstream_files(synced.root)
    assert manifest(synced.layout).by_name[name].sha256 == upstream_files(synced.root)[name]
    assert view.files[name][1] == kept_inode, "a hard link to the kept bytes, not a copy"


def test_new_bytes_are_downloaded_not_linked(synced: User) -> None:
    """Only bytes validated here before can be linked: a real edit is fetched as always."""
    name = file_names(synced.root)[0]
    valid_edit(synced.root, name)
    synced.reset_counts()

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert "linked, not downloaded" not in outcome.text
    assert synced.file_requests()["lfs_get"] + synced.file_requests()["resolve_get"] >= 1
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_only_a_kept_file_with_the_hubs_sha256_is_linked(tmp_path: Path) -> None:
    """Name and size only make a candidate; its bytes, hashed here, decide."""
    layout = Layout(tmp_path)
    generation = layout.generations_dir(CONFIG) / "c1-1"
    generation.mkdir(parents=True)
    kept = generation / "a.parquet"
    kept.write_bytes(b"kept bytes")
    same_size = hashlib.sha256(b"KEPT BYTES").hexdigest()
    right = hashlib.sha256(b"kept bytes").hexdigest()
    for sha in (same_size, right):
        layout.derived_dir(CONFIG, sha).mkdir(parents=True)

    def plan(sha: str, commit: str) -> Plan:
        return Plan(commit, (RemoteFile(f"{CONFIG}/a.parquet", 10, sha),), (), (), ())

    assert link_kept_contents(layout, CONFIG, plan(same_size, "c2"), log=print) == []
    assert not stage_path(layout, CONFIG, "c2", "a.parquet").exists()
    assert link_kept_contents(layout, CONFIG, plan(right, "c3"), log=print) == ["a.parquet"]
    staged = stage_path(layout, CONFIG, "c3", "a.parquet")
    assert staged.stat().st_ino == kept.stat().st_ino

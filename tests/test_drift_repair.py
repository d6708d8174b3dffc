"""Drift in the published mirror, as a user meets it: the audit (`mirror_matches_manifest`, run
through Dagster) only reports it and writes nothing; the next `tol-dagster sync` re-verifies the
files it named and fetches again those still drifted, and finds missing or resized files by
itself. The local Hub counts every file request.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    file_names,
    flip_a_byte,
    job_checks,
    manifest,
    mirror_view,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)

from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.jobs import AUDIT_JOB
from tol_dagster.resync.audit import AUDIT_CHECK, DRIFTED_FILES
from tol_dagster.settings import Settings
from tol_dagster.store.hashing import CHUNK_BYTES, sha256_file

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def tree(home: Path, skip: Path) -> dict[str, tuple[str | None, int, int]]:
    """Every entry under `home` but `skip` (Dagster's storage): its content (a file's sha256, a
    symlink's target), mtime and mode."""
    found: dict[str, tuple[str | None, int, int]] = {}
    for root, folders, files in os.walk(home):
        base = Path(root)
        folders[:] = [name for name in folders if base / name != skip]
        for name in [*folders, *files]:
            path = base / name
            status = path.lstat()
            content = (
                os.readlink(path)
                if stat.S_ISLNK(status.st_mode)
                else sha256_file(path)
                if stat.S_ISREG(status.st_mode)
                else None
            )
            found[str(path.relative_to(home))] = (content, status.st_mtime_ns, status.st_mode)
    return found


def audit(user: User) -> dg.AssetCheckEvaluation:
    """The audit job run through Dagster on the user's instance, as the schedule runs it."""
    return job_checks(AUDIT_JOB)[AUDIT_CHECK]


def drifted_files(evaluation: dg.AssetCheckEvaluation) -> object:
    named = evaluation.metadata[DRIFTED_FILES]
    assert isinstance(named, dg.JsonMetadataValue)
    return named.value


def test_an_audit_that_finds_drift_leaves_every_file_of_the_data_home_untouched(
    synced: User,
) -> None:
    rotten = file_names(synced.root)[1]
    flip_a_byte(synced.layout.mirror_dir(CONFIG) / rotten)
    before = tree(synced.home, skip=synced.layout.dagster_home())

    evaluation = audit(synced)

    assert not evaluation.passed
    assert drifted_files(evaluation) == [rotten]
    assert "the next resync re-verifies these 1 drifted files and fetches them again" in (
        evaluation.description or ""
    )
    assert tree(synced.home, skip=synced.layout.dagster_home()) == before


def test_after_a_failed_audit_the_next_sync_fetches_that_file_alone_and_the_audit_passes(
    synced: User,
) -> None:
    rotten = file_names(synced.root)[1]
    flip_a_byte(synced.layout.mirror_dir(CONFIG) / rotten)
    before = mirror_view(synced.layout)
    assert not audit(synced).passed
    synced.reset_counts()

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.requests()["lfs_get"] == 1
    assert synced.bytes_served() == (synced.folder / rotten).stat().st_size
    after = mirror_view(synced.layout)
    assert after.sha256s == upstream_files(synced.root)
    assert after.target != before.target, "published as a new generation"
    assert after.files[rotten][1] != before.files[rotten][1]
    for name, (_, inode) in before.files.items():
        if name != rotten:
            assert after.files[name][1] == inode, f"{name} was not linked from the mirror"
    assert manifest(synced.layout).upstream_commit == synced.hub.head_commit()
    passed = audit(synced)
    assert passed.passed, passed.description
    assert drifted_files(passed) == []


def latest_audit(user: User) -> dg.AssetCheckEvaluation:
    """The latest completed evaluation of the mirror's audit, from the user's instance."""
    with open_instance(Settings.from_env()) as instance:
        [record] = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(["tol", CONFIG, "mirror"]), AUDIT_CHECK),
            limit=1,
            status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
        )
    assert record.evaluation is not None
    return record.evaluation


def test_a_file_restored_by_hand_after_an_audit_is_not_fetched_again(synced: User) -> None:
    rotten = file_names(synced.root)[1]
    path = synced.layout.mirror_dir(CONFIG) / rotten
    flip_a_byte(path)
    assert drifted_files(audit(synced)) == [rotten]
    flip_a_byte(path)  # the operator puts the bytes back (from a backup)
    before = mirror_view(synced.layout)
    synced.reset_counts()

    again = synced.sync()  # the latest audit still names `rotten`

    assert again.code == 0, again.text
    assert f"match the manifest again, not fetched: {rotten}" in again.text
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    assert mirror_view(synced.layout) == before


def test_the_audit_after_a_publish_supersedes_an_older_report(synced: User) -> None:
    rotten = file_names(synced.root)[1]
    flip_a_byte(synced.layout.mirror_dir(CONFIG) / rotten)
    assert drifted_files(audit(synced)) == [rotten]
    valid_edit(synced.root, rotten)  # upstream rewrites it: the next publish replaces the rot

    replaced = synced.sync()

    assert replaced.code == 0, replaced.text
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    after_publish = latest_audit(synced)
    assert after_publish.passed, after_publish.description
    assert "1 files just published re-hashed" in (after_publish.description or "")
    assert drifted_files(after_publish) == []
    before = mirror_view(synced.layout)
    synced.reset_counts()
    again = synced.sync()
    assert again.code == 0, again.text
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    assert mirror_view(synced.layout) == before


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_published_file_deleted_or_truncated_is_fetched_again_without_an_audit(
    synced: User, damage: str
) -> None:
    name = file_names(synced.root)[1]
    path = synced.layout.mirror_dir(CONFIG) / name
    if damage == "deleted":
        path.unlink()
    else:
        os.chmod(path, 0o644)
        os.truncate(path, path.stat().st_size // 2)

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert f"{name} drifted from the manifest" in outcome.text
    assert synced.requests()["lfs_get"] == 1
    assert synced.bytes_served() == (synced.folder / name).stat().st_size
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    after = latest_audit(synced)  # the resync's own: what it published, re-hashed
    assert after.passed, after.description
    assert "1 files just published re-hashed" in (after.description or "")


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 7])
def test_sha256_file_hashes_every_byte_whatever_the_size(tmp_path: Path, size: int) -> None:
    """The read buffer is sized to the file: no byte is left out at or around its edges."""
    data = os.urandom(size)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()

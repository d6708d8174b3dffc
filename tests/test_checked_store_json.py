"""The manifest and the generation records carry a checksum (`store.checked_json`): a digit of a
file's sha256 changed on disk, which still parses, reads as damaged. Before, a changed record
made every sync stop ("changed on disk ... run `tol-dagster sync` again") with the audit all
ok, and a changed manifest sent the audit and the sync in a circle, each naming the other."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from resync_testing import (
    CONFIG,
    User,
    a_digit_changed,
    dagster_home,
    edit_upstream,
    mirror_view,
    synced,
    synced_home,
    upstream_files,
    user,
)

from tol_dagster.store import checked_json
from tol_dagster.store.pins import record_path

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def test_a_document_reads_back_and_a_changed_byte_is_refused() -> None:
    document = {"files": {"a.parquet": "ab" * 32}, "published_at": 1.5, "name": "gén"}
    text = checked_json.dumps(document)
    assert checked_json.loads(text) == document
    with pytest.raises(ValueError, match="checksum does not match"):
        checked_json.loads(text.replace("ab" * 32, "ab" * 31 + "ac"))
    assert checked_json.loads(json.dumps(document)) == document, "written before checksums"


def _new_publisher(table: pa.Table) -> pa.Table:
    """An upstream edit of one value that no check refuses: a new commit."""
    values = table["publisher"].to_pylist()
    values[5] = "a publisher renamed upstream"
    at = table.schema.get_field_index("publisher")
    return table.set_column(at, "publisher", pa.array(values, pa.string()))


def _damage(path: Path, key: str = "sha256") -> None:
    path.write_text(a_digit_changed(path.read_text("utf-8"), key), "utf-8")


@pytest.mark.e2e
def test_a_sync_after_a_generation_record_was_damaged_publishes_upstream(synced: User) -> None:
    """The record's sha256 of a file upstream did not change; another file changed."""
    generation = os.path.basename(os.readlink(synced.layout.mirror_dir(CONFIG)))
    files = sorted(synced.folder.glob("*.parquet"))
    _damage(record_path(synced.layout, CONFIG, generation), files[1].name)
    edit_upstream(files[2], _new_publisher)
    outcome = synced.sync()
    assert outcome.code == 0, outcome.text
    mirrored = {name: sha for name, (sha, _) in mirror_view(synced.layout).files.items()}
    assert mirrored == upstream_files(synced.root)
    assert synced.tol("audit").code == 0


@pytest.mark.e2e
def test_a_damaged_manifest_is_named_by_sync_and_audit_and_mended_as_they_say(
    synced: User,
) -> None:
    path = synced.layout.manifest_path(CONFIG)
    _damage(path)
    for command in ("sync", "audit"):
        outcome = synced.tol(command)
        assert outcome.code == 2, outcome.text  # the store's damage, as for any StoreError
        first = next(line for line in outcome.err.splitlines() if line.startswith("tol-dagster:"))
        assert str(path) in first and "checksum does not match" in first, first
        assert "delete it and run `tol-dagster sync`" in first, first
    path.unlink()
    assert synced.sync().code == 0
    assert synced.tol("audit").code == 0
    mirrored = {name: sha for name, (sha, _) in mirror_view(synced.layout).files.items()}
    assert mirrored == upstream_files(synced.root)

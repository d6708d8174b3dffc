"""A published table that no longer reads (summaries, taxon index, centroids, the slice
catalog) is named with exit 4 and how to write it anew, never a bug (exit 70); the next slice
built from the command line rewrites the derived tables and the catalog as they were. A slice
file a reader cannot read is named with the command that rebuilds it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user

from tol_dagster import catalog
from tol_dagster.derived import summaries
from tol_dagster.errors import LocalStorageError
from tol_dagster.slices import records
from tol_dagster.slices.catalog_file import read_catalog

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def test_damaged_published_tables_are_named_then_written_anew_by_the_next_slice(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    layout = synced.layout
    published = layout.home / "published" / CONFIG
    tables = sorted(p for p in published.rglob("*.parquet") if p.parent.name != "slices")
    assert layout.catalog_path(CONFIG) in tables and layout.taxon_index_path(CONFIG) in tables
    before = {p: pq.read_table(p) for p in tables}
    for path in tables:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    listed = synced.tol("slices", "list")
    assert listed.code == 4, listed.text
    assert f"the slice catalog {layout.catalog_path(CONFIG)} is damaged" in listed.err
    with pytest.raises(LocalStorageError, match="build any slice"):
        catalog.list_slices(CONFIG, home=layout.home)
    lineage = summaries.summary_path(layout, CONFIG, "lineage")
    with pytest.raises(LocalStorageError, match=re.escape(f"{lineage} is damaged")) as raised:
        summaries.read_summary(layout, CONFIG, "lineage")
    assert f"materialize tol/{CONFIG}/summary/lineage" in str(raised.value)

    rebuilt = synced.tol("slice", "family=Felidae")
    assert rebuilt.code == 0, rebuilt.text
    for path, table in before.items():
        if path != layout.catalog_path(CONFIG):
            assert pq.read_table(path).equals(table), f"{path} is not what it was"
    names = read_catalog(layout, CONFIG).column("name").to_pylist()
    assert names == before[layout.catalog_path(CONFIG)].column("name").to_pylist()
    relisted = synced.tol("slices", "list")
    assert relisted.code == 0 and "family=Felidae" in relisted.out, relisted.text


def test_the_catalogs_writer_rewrites_a_damaged_catalog_from_what_it_is_given(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    assert synced.tol("slice", "genus=Panthera").code == 0
    path = synced.layout.catalog_path(CONFIG)
    path.write_bytes(b"PAR1 not a catalog")
    removed = synced.tol("slices", "remove", "genus=Panthera")
    assert removed.code == 0, removed.text
    assert read_catalog(synced.layout, CONFIG).column("name").to_pylist() == ["family=Felidae"]


def test_a_damaged_slice_file_is_named_to_a_reader_with_the_command_that_rebuilds_it(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    before = catalog.read_arrow("family=Felidae")
    path = catalog.slice_path("family=Felidae")
    path.write_bytes(path.read_bytes()[:1000])

    with pytest.raises(
        LocalStorageError, match=re.escape(f"the slice file {path} is damaged")
    ) as raised:
        catalog.read_pandas("family=Felidae")
    assert "rebuild it with `tol-dagster slice family=Felidae`" in str(raised.value)
    assert synced.tol("slice", "family=Felidae").code == 0
    assert catalog.read_arrow("family=Felidae").equals(before)


def test_a_reader_that_verifies_is_refused_a_slice_whose_bytes_changed_on_disk(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    before = catalog.read_arrow("family=Felidae")
    assert catalog.read_arrow("family=Felidae", verify=True).equals(before)
    path = catalog.slice_path("family=Felidae")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x20  # inside the pages: it may still decode, to other values
    path.write_bytes(bytes(data))

    with pytest.raises(LocalStorageError, match="no longer has the sha256 the catalog gives"):
        catalog.read_pandas("family=Felidae", verify=True)
    assert synced.tol("slice", "family=Felidae").code == 0
    assert catalog.read_arrow("family=Felidae", verify=True).equals(before)


def test_a_verified_read_accepts_a_slice_published_since_the_catalog_was_written(
    synced: User,
) -> None:
    """Between a slice's publish and the catalog's next write (its one writer runs after), the
    slice's record gives the new bytes: a verifying reader gets them, not a refusal."""
    assert synced.tol("slice", "family=Felidae").code == 0
    assert synced.tol("slice", "genus=Panthera").code == 0
    layout = synced.layout
    path, other = catalog.slice_path("family=Felidae"), catalog.slice_path("genus=Panthera")
    record = records.slice_record_of(layout, CONFIG, "family=Felidae")
    assert record is not None
    staged = path.with_name(".publish.tmp")
    shutil.copyfile(other, staged)
    os.replace(staged, path)  # the rebuild's publish; its record follows, the catalog later
    with pytest.raises(LocalStorageError, match="no longer has the sha256 the catalog gives"):
        catalog.read_arrow("family=Felidae", verify=True)  # no record of these bytes yet
    record.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    records.record_path(layout, CONFIG, "family=Felidae").write_text(json.dumps(record))

    read = catalog.read_arrow("family=Felidae", verify=True)

    assert read.equals(pq.read_table(other))


def test_a_verified_read_during_a_publish_gets_the_bytes_it_hashed(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish renames new bytes into the slice's path while the reader hashes the old ones:
    the table read is the one hashed, never the new file behind an old file's sha256."""
    assert synced.tol("slice", "family=Felidae").code == 0
    assert synced.tol("slice", "genus=Panthera").code == 0
    before = catalog.read_arrow("family=Felidae")
    path, other = catalog.slice_path("family=Felidae"), catalog.slice_path("genus=Panthera")
    real_sha256 = hashlib.sha256

    def publishing_meanwhile(data: object) -> object:
        staged = path.with_name(".publish.tmp")
        shutil.copyfile(other, staged)
        os.replace(staged, path)  # what an atomic publish does
        return real_sha256(data)

    monkeypatch.setattr(catalog.hashlib, "sha256", publishing_meanwhile)
    read = catalog.read_arrow("family=Felidae", verify=True)
    assert read.equals(before), "the bytes hashed and the bytes read are one file's"
    assert pq.read_table(path).num_rows != before.num_rows, "the publish did happen"

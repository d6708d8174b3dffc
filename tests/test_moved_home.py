"""A data home moved elsewhere (a bigger disk) keeps working: the mirror's link is relative, and
slices are found in this home's slices folder by their key, not by the absolute path their
records and the catalog kept from the home they were written in. The catalog's next write
gives this home's paths; nothing is rebuilt for the move."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user

from tol_dagster import catalog
from tol_dagster.slices.audit import audit_slices
from tol_dagster.slices.catalog_file import read_catalog

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

FELIDAE, PANTHERA = "family=Felidae", "genus=Panthera"


def moved(user: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    """`user` with its data home renamed to another folder, and TOL_HOME pointing there."""
    target = tmp_path / "bigger-disk" / "home"
    target.parent.mkdir()
    os.rename(user.home, target)
    monkeypatch.setenv("TOL_HOME", str(target))
    return dataclasses.replace(user, home=target)


def under(path: Path | str, home: Path) -> bool:
    return Path(path).is_relative_to(home)


def test_a_moved_home_reads_audits_rebuilds_and_removes_its_slices(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (FELIDAE, PANTHERA):
        assert synced.tol("slice", key).code == 0
    old = synced.home
    built_at = {r["name"]: r["built_at"] for r in read_catalog(synced.layout, CONFIG).to_pylist()}
    user = moved(synced, tmp_path, monkeypatch)
    assert not under(read_catalog(user.layout, CONFIG)["path"][0].as_py(), user.home)

    assert under(catalog.slice_path(FELIDAE), user.home)
    assert catalog.read_arrow(FELIDAE, verify=True).num_rows > 0
    audited = audit_slices(user.layout, CONFIG, rehash=True)
    assert audited.passed, audited.message
    assert user.tol("audit").code == 0

    again = user.tol("slice", PANTHERA)  # then the catalog is written anew
    assert again.code == 0, again.text
    rows = {r["name"]: r for r in read_catalog(user.layout, CONFIG).to_pylist()}
    assert all(under(r["path"], user.home) for r in rows.values()), rows
    assert rows[FELIDAE]["built_at"] == built_at[FELIDAE], "the other slice is not rebuilt"

    removed = user.tol("slices", "remove", FELIDAE)
    assert removed.code == 0, removed.text
    assert not (user.layout.slices_dir(CONFIG) / "family%3DFelidae.parquet").exists()
    assert not old.exists()


def test_a_whole_rank_in_a_moved_home_is_not_rebuilt(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert synced.tol("slices", "add-rank", "family", "--min-rows", "2").code == 0
    built_at = {r["name"]: r["built_at"] for r in read_catalog(synced.layout, CONFIG).to_pylist()}
    user = moved(synced, tmp_path, monkeypatch)

    again = user.tol("slices", "add-rank", "family")

    assert again.code == 0, again.text
    rows = read_catalog(user.layout, CONFIG).to_pylist()
    assert {r["name"]: r["built_at"] for r in rows} == built_at, "a move rebuilds nothing"
    assert all(under(r["path"], user.home) for r in rows)

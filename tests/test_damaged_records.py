"""A slice record or rank state that no longer reads (a damaged disk, an edit) is never a bug
(exit 70): what decides a rebuild takes the slice for never built and writes its record anew;
what reports the slices (the catalog) stops with exit 4 naming the file and how to mend it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user

from tol_dagster.errors import LocalStorageError
from tol_dagster.slices import records
from tol_dagster.slices.catalog_file import read_catalog
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store.layout import Layout

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

#: What a damaged record may hold: cut short, not an object, not UTF-8, an object without a name.
DAMAGES = [b'{\n "config": "bioclip-2_float16",\n "na', b"[]", b"\xff\xfe{}", b'{"rows": 3}']


def _record(layout: Layout, name: str) -> Path:
    folder = layout.slice_records_dir(CONFIG)
    return folder / records.record_file_name(parse_slice_key(name))


def _damage(layout: Layout, name: str, damage: bytes = DAMAGES[0]) -> Path:
    path = _record(layout, name)
    path.write_bytes(damage)
    return path


@pytest.mark.parametrize("damage", DAMAGES)
def test_readers_of_a_damaged_record_rebuild_its_slice_or_name_it(
    tmp_path: Path, damage: bytes
) -> None:
    layout = Layout(tmp_path)
    for name in ["family=A", "family=B", "family=C"]:
        record = {"name": name, "generation": "g1", "allow_empty": True, "path": f"/x/{name}"}
        records.save_slice_record(layout, CONFIG, record)
    damaged = _damage(layout, "family=B", damage)

    listed = records.RecordFolder(layout, CONFIG)
    assert listed.take(parse_slice_key("family=B")) is None, "rebuilt as if never built"
    assert records.built_generations(layout, CONFIG) == {"family=A": "g1", "family=C": "g1"}
    assert not records.allowed_empty(layout, CONFIG, "family=B")
    assert records.allowed_empty(layout, CONFIG, "family=A")
    with pytest.raises(LocalStorageError, match=r"slice record .* is damaged") as raised:
        list(records.slice_records(layout, CONFIG))
    assert str(damaged) in str(raised.value) and "tol-dagster slice family=B" in str(raised.value)
    assert raised.value.exit_code == 4

    removed = records.remove_slice_records_named(layout, CONFIG, {"family=B", "family=C"})
    assert sorted(removed) == [  # in this home's slices folder, whatever a record kept
        layout.slices_dir(CONFIG) / parse_slice_key(name).file_name
        for name in ("family=B", "family=C")
    ]
    assert [r["name"] for r in records.slice_records(layout, CONFIG)] == ["family=A"]


def test_a_damaged_rank_state_is_named_with_how_to_write_it_anew(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    records.save_rank_state(layout, CONFIG, "family", 3)
    records.save_rank_state(layout, CONFIG, "genus", 1)
    assert records.published_ranks(layout, CONFIG) == {"family": 3, "genus": 1}
    state = layout.state_dir(CONFIG) / "ranks" / "genus.json"
    for damage in [*DAMAGES, b'{"min_rows": "1"}']:
        state.write_bytes(damage)
        with pytest.raises(LocalStorageError, match=re.escape(f"rank state {state} is damaged")):
            records.published_ranks(layout, CONFIG)


def test_the_commands_mend_damaged_records_or_name_them(synced: User) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    assert synced.tol("slices", "add-rank", "genus").code == 0
    layout = synced.layout
    genus = next(
        r["name"] for r in records.slice_records(layout, CONFIG) if r.get("rank") == "genus"
    )
    _damage(layout, "family=Felidae")
    other = _damage(layout, genus, b"[]")

    rebuilt = synced.tol("slice", "family=Felidae")
    assert rebuilt.code == 4, rebuilt.text
    assert f"slice record {other} is damaged" in rebuilt.err, "the catalog names the other record"
    assert json.loads(_record(layout, "family=Felidae").read_text())["name"] == "family=Felidae"

    ranked = synced.tol("slices", "add-rank", "genus")
    assert ranked.code == 0, ranked.text
    assert json.loads(other.read_text())["name"] == genus, "the pass rebuilt the damaged value"
    names = set(read_catalog(layout, CONFIG).column("name").to_pylist())
    assert {"family=Felidae", genus} <= names

    state = layout.state_dir(CONFIG) / "ranks" / "genus.json"
    state.write_bytes(b"")
    refused = synced.tol("slices", "add-rank", "genus")
    assert refused.code == 4 and f"rank state {state} is damaged" in refused.err, refused.text
    assert synced.tol("slices", "add-rank", "genus", "--min-rows", "1").code == 0
    assert records.published_ranks(layout, CONFIG)["genus"] == 1

    _damage(layout, "family=Felidae")
    removed = synced.tol("slices", "remove", "family=Felidae")
    assert removed.code == 0, removed.text
    assert not _record(layout, "family=Felidae").exists()
    assert not (layout.slices_dir(CONFIG) / parse_slice_key("family=Felidae").file_name).exists()
    assert "family=Felidae" not in set(read_catalog(layout, CONFIG).column("name").to_pylist())

"""The catalog: one row per published slice with the contract's columns, atomic upserts and
removals, and the reader API users call (`list_slices`, `read_arrow`, `read_pandas`,
`read_duckdb`), including how it picks a config and what it says when a slice is missing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror

from tol_dagster import catalog
from tol_dagster.catalog import list_slices, read_arrow, read_duckdb, read_pandas
from tol_dagster.defs.published.catalog_asset import build_catalog_asset
from tol_dagster.defs.published.partitions import slices_partitions_name
from tol_dagster.defs.resources import StorageResource
from tol_dagster.errors import SliceNotPublished, SliceSpecError
from tol_dagster.schema import DEFAULT_CONFIG, expected_schema
from tol_dagster.slices import catalog_file, records
from tol_dagster.slices.catalog_file import CATALOG_SCHEMA, read_catalog, remove_entry, upsert_rows
from tol_dagster.slices.extract import extract_slice
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store.layout import Layout

OTHER = "bioclip-2.5-vith14_float16"


def _publish(layout: Layout, config: str, text: str, files: list) -> None:
    key = parse_slice_key(text)
    result = extract_slice(
        key,
        files,
        None,
        layout.slices_dir(config) / key.file_name,
        schema=expected_schema(DEFAULT_CONFIG),
    )
    row = {
        "config": config, "name": key.name, "rank": key.rank, "value": key.value,
        "path": str(result.path.resolve()), "rows": result.rows, "bytes": result.bytes,
        "sha256": result.sha256, "upstream_commit": "c0ffee", "built_at": datetime.now(UTC),
    }  # fmt: skip
    upsert_rows(layout, config, pa.Table.from_pylist([row], schema=CATALOG_SCHEMA))


@pytest.fixture
def home(small_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setenv("TOL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOL_CONFIGS", DEFAULT_CONFIG)
    layout = Layout(tmp_path / "home")
    files = sample_mirror(small_sample)
    _publish(layout, DEFAULT_CONFIG, "family=Felidae", files)
    _publish(layout, DEFAULT_CONFIG, "genus=Morus/kingdom=Animalia", files)
    return layout


def test_the_catalog_has_exactly_the_contract_columns(home: Layout) -> None:
    path = home.catalog_path(DEFAULT_CONFIG)
    assert path == home.home / "published" / DEFAULT_CONFIG / "catalog.parquet"
    table = pq.read_table(path)
    assert table.schema.names == [
        "config", "name", "rank", "value", "path", "rows", "bytes", "sha256",
        "upstream_commit", "built_at",
    ]  # fmt: skip
    assert table.schema.equals(CATALOG_SCHEMA, check_metadata=False)
    assert table.schema.field("built_at").type == pa.timestamp("us", tz="UTC")
    rows = {r["name"]: r for r in table.to_pylist()}
    assert set(rows) == {"family=Felidae", "kingdom=Animalia/genus=Morus"}
    morus = rows["kingdom=Animalia/genus=Morus"]
    assert (morus["rank"], morus["value"], morus["config"]) == ("genus", "Morus", DEFAULT_CONFIG)
    felidae = rows["family=Felidae"]
    assert Path(felidae["path"]).is_absolute() and Path(felidae["path"]).is_file()
    assert felidae["rows"] == pq.read_metadata(felidae["path"]).num_rows > 0
    assert felidae["bytes"] == Path(felidae["path"]).stat().st_size
    assert felidae["upstream_commit"] == "c0ffee"


def test_upsert_replaces_by_name_and_remove_drops_one_row(home: Layout) -> None:
    old = read_catalog(home, DEFAULT_CONFIG)
    felidae = next(r for r in old.to_pylist() if r["name"] == "family=Felidae")
    later = datetime(2031, 1, 2, tzinfo=UTC)
    entry = {**felidae, "upstream_commit": "beef", "built_at": later}
    new = upsert_rows(home, DEFAULT_CONFIG, pa.Table.from_pylist([entry], schema=CATALOG_SCHEMA))
    assert new.num_rows == old.num_rows
    row = next(
        r for r in read_catalog(home, DEFAULT_CONFIG).to_pylist() if r["name"] == "family=Felidae"
    )
    assert (row["upstream_commit"], row["built_at"]) == ("beef", later)

    assert remove_entry(home, DEFAULT_CONFIG, "genus=Morus/kingdom=Animalia")
    assert not remove_entry(home, DEFAULT_CONFIG, "genus=Morus/kingdom=Animalia")
    assert read_catalog(home, DEFAULT_CONFIG)["name"].to_pylist() == ["family=Felidae"]
    assert [
        p.name
        for p in home.catalog_path(DEFAULT_CONFIG).parent.iterdir()
        if p.name.endswith(".tmp")
    ] == []


def test_an_entry_for_another_config_is_refused(home: Layout) -> None:
    row = read_catalog(home, DEFAULT_CONFIG).to_pylist()[0]
    with pytest.raises(ValueError, match="another config"):
        upsert_rows(home, OTHER, pa.Table.from_pylist([row], schema=CATALOG_SCHEMA))


def test_readers_return_the_slice_in_every_form(home: Layout) -> None:
    table = read_arrow("family=Felidae")
    assert table.schema.field("emb").type == pa.list_(pa.float16(), 768)
    assert set(table["family"].to_pylist()) == {"Felidae"}
    frame = read_pandas("family=Felidae")
    assert list(frame["uuid"]) == table["uuid"].to_pylist()
    relation = read_duckdb("family=Felidae")
    assert relation.aggregate("count(*)").fetchall() == [(table.num_rows,)]
    con = duckdb.connect()
    mine = read_duckdb("kingdom=Animalia/genus=Morus", con=con, config=DEFAULT_CONFIG)
    assert mine.aggregate("count(DISTINCT kingdom), min(kingdom)").fetchall() == [(1, "Animalia")]
    assert [(read_arrow("genus=Morus/kingdom=Animalia").num_rows,)] == mine.aggregate(
        "count(*)"
    ).fetchall()


def test_list_slices_covers_one_or_every_config(home: Layout, small_sample: Path) -> None:
    _publish(home, OTHER, "order=Primates", sample_mirror(small_sample))
    every = list_slices()
    assert sorted(zip(every["config"], every["name"], strict=True)) == sorted(
        [
            (DEFAULT_CONFIG, "family=Felidae"),
            (DEFAULT_CONFIG, "kingdom=Animalia/genus=Morus"),
            (OTHER, "order=Primates"),
        ]
    )
    assert list(list_slices(OTHER)["name"]) == ["order=Primates"]
    assert list(list_slices(home=home.home / "elsewhere").columns) == CATALOG_SCHEMA.names


def test_config_none_picks_the_first_of_tol_configs_when_several_are_published(
    home: Layout, small_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(home, OTHER, "family=Felidae", sample_mirror(small_sample))
    monkeypatch.setenv("TOL_CONFIGS", f"{OTHER},{DEFAULT_CONFIG}")
    assert catalog.slice_path("family=Felidae").parent == home.slices_dir(OTHER)
    monkeypatch.setenv("TOL_CONFIGS", "some-other-config")
    with pytest.raises(SliceNotPublished, match="config=") as raised:
        read_arrow("family=Felidae")
    assert DEFAULT_CONFIG in str(raised.value) and OTHER in str(raised.value)


def test_a_missing_slice_says_how_to_build_it(home: Layout) -> None:
    with pytest.raises(SliceNotPublished) as raised:
        read_arrow("family=Canidae")
    assert "tol-dagster slice 'family=Canidae'" in str(raised.value)
    assert raised.value.exit_code == 2
    Path(read_catalog(home, DEFAULT_CONFIG)["path"][0].as_py()).unlink()
    with pytest.raises(SliceNotPublished, match="is missing"):
        read_arrow("family=Felidae")
    with pytest.raises(SliceSpecError):
        read_arrow("tribe=Felini")


def test_nothing_published_says_how_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_HOME", str(tmp_path))
    assert list_slices().empty
    with pytest.raises(SliceNotPublished, match="tol-dagster slice"):
        read_arrow("family=Felidae")


def _record(name: str, **how: object) -> dict[str, object]:
    key = parse_slice_key(name)
    return {
        "config": DEFAULT_CONFIG, "name": key.name, "rank": key.rank, "value": key.value,
        "path": f"/published/{key.file_name}", "rows": 3, "bytes": 1_000,
        "sha256": "ab" * 32, "upstream_commit": "c0ffee",
        "built_at": datetime(2026, 12, 6, tzinfo=UTC).isoformat(), **how,
    }  # fmt: skip


def test_a_refresh_that_drops_thousands_of_slices_rewrites_the_catalog_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank's raised `min_rows` may drop most of its slices: the catalog asset keeps the
    slices recorded as built that are live (a rank's, or a partition's) and the rows of live
    partitions not built again, dropping the rest, in one rewrite (it removed each dropped
    slice with a rewrite of its own: a catalog of 868,000 species rewritten 400,000 times)."""
    layout = Layout(tmp_path / "home")
    gone = [f"species=Gone {i}" for i in range(3_000)]
    kept = _record("family=Kept", upstream_commit="old")  # a partition not built again
    old = catalog_file.catalog_rows(layout, DEFAULT_CONFIG, [*(_record(n) for n in gone), kept])
    upsert_rows(layout, DEFAULT_CONFIG, old)
    ranked = [_record(f"species=Kept {i}", rank_pass="species") for i in range(2_000)]
    for record in [*ranked, _record("genus=Unlisted")]:  # no longer a partition, no rank's
        records.save_slice_record(layout, DEFAULT_CONFIG, record, sync_dir=False)
    rewrites = []
    real = catalog_file._publish
    monkeypatch.setattr(catalog_file, "_publish", lambda *a: rewrites.append(1) or real(*a))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(slices_partitions_name(DEFAULT_CONFIG), ["family=Kept"])
    asset = build_catalog_asset(DEFAULT_CONFIG)
    storage = StorageResource(home=str(layout.home))
    assert dg.materialize([asset], instance=instance, resources={"storage": storage}).success
    assert len(rewrites) == 1
    table = read_catalog(layout, DEFAULT_CONFIG)
    assert table["name"].to_pylist() == sorted(["family=Kept", *(r["name"] for r in ranked)])
    assert (
        table.filter(pc.equal(table["name"], "family=Kept"))["upstream_commit"][0].as_py() == "old"
    )
    assert table.schema.equals(CATALOG_SCHEMA, check_metadata=False)

"""What a person reads in the Dagster UI: table previews with NULL written out, every column
described, sizes for people beside raw bytes, the upstream commit as a link to the Hub's page,
and the slice's read snippet whole.

The helpers are tested as plain functions; then one sync and one slice through the command line
show the same on every asset's latest materialization, as the UI reads it from the instance.
"""

from __future__ import annotations

import re

import dagster as dg
import pyarrow as pa
import pytest
from resync_testing import CONFIG, User, dagster_home, user

from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import commit_url, table_preview, table_schema, with_size
from tol_dagster.defs.published.derived_assets import centroid_preview
from tol_dagster.defs.published.keys import summary_keys
from tol_dagster.schema import CONFIG_DIMS, expected_schema

__all__ = ["dagster_home", "user"]  # fixtures, imported to be found

#: The contract's columns, spelled out (not imported from the code under test).
CONTRACT = [
    "uuid",
    "emb",
    "source_dataset",
    "source_id",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "scientific_name",
    "common_name",
    "publisher",
    "basisOfRecord",
    "identifier",
    "img_type",
]


def described(schema: dg.TableSchema) -> dict[str, str]:
    return {column.name: column.description or "" for column in schema.columns}


def test_a_preview_writes_null_as_null_counts_with_separators_and_shows_20_rows() -> None:
    table = pa.table(
        {
            "order": pa.array([None, "Primates"] + ["Carnivora"] * 30, pa.string()),
            "images": pa.array([0, 1234567, *range(30)], pa.int64()),
        }
    )

    preview = table_preview(table)

    assert isinstance(preview, dg.TableMetadataValue)
    records = [record.data for record in preview.value.records]
    assert len(records) == 20
    assert records[:2] == [
        {"order": "NULL", "images": "0"},
        {"order": "Primates", "images": "1,234,567"},
    ]
    assert [column.name for column in preview.value.schema.columns] == ["order", "images"]


def test_a_preview_shows_a_struct_as_its_values_and_a_null_number_as_null() -> None:
    key = pa.struct([("kingdom", pa.string()), ("genus", pa.string())])
    table = pa.table(
        {
            "first_key": pa.array([{"kingdom": "Animalia", "genus": None}], key),
            "rows": pa.array([None], pa.int64()),
        }
    )

    [record] = table_preview(table).value.records

    assert record.data == {"first_key": "Animalia / NULL", "rows": "NULL"}


@pytest.mark.parametrize("config", sorted(CONFIG_DIMS))
def test_every_contract_column_has_a_description_and_emb_names_its_model_and_width(
    config: str,
) -> None:
    schema = expected_schema(config).append(pa.field("resolution_status", pa.string()))

    descriptions = described(table_schema(schema, config))

    assert list(descriptions) == [*CONTRACT, "resolution_status"]
    assert all(text.strip() for text in descriptions.values()), descriptions
    assert "BioCLIP" in descriptions["emb"]
    assert f"{CONFIG_DIMS[config]} float16" in descriptions["emb"]


def test_a_column_the_contract_does_not_know_is_described_as_such() -> None:
    schema = pa.schema([("uuid", pa.string()), ("surprise", pa.int8())])

    descriptions = described(table_schema(schema, CONFIG))

    assert "Not in the contract" in descriptions["surprise"]


def test_the_commit_url_is_the_hubs_commit_page_of_the_dataset() -> None:
    url = commit_url("https://huggingface.co/", "imageomics/TreeOfLife-200M-Embeddings", "94a45")

    assert isinstance(url, dg.UrlMetadataValue)
    assert url.value == (
        "https://huggingface.co/datasets/imageomics/TreeOfLife-200M-Embeddings/commit/94a45"
    )


def test_bytes_come_with_a_size_for_people() -> None:
    sized = with_size("bytes_fetched", 174_711_913)

    assert sized["bytes_fetched"].value == 174_711_913
    assert sized["size_fetched"].value == "166.6 MiB"


def test_a_centroid_preview_shows_the_norm_and_first_values_not_the_vector() -> None:
    vectors = pa.array([[3.0, 4.0] + [0.0] * 6], pa.list_(pa.float32(), 8))
    table = pa.table({"level": ["species"], "centroid": vectors, "images": [5]})

    shown = centroid_preview(table)

    assert shown.column_names == ["level", "centroid_norm", "centroid_head", "images"]
    assert shown.to_pylist() == [
        {
            "level": "species",
            "centroid_norm": 5.0,
            "centroid_head": "3.000, 4.000, 0.000, 0.000, …",
            "images": 5,
        }
    ]


def test_after_a_sync_and_a_slice_every_asset_shows_what_a_person_reads(user: User) -> None:
    assert user.sync().code == 0
    assert user.tol("slice", "family=Felidae").code == 0
    page = f"{user.hub.endpoint}/datasets/{user.hub.repo_id}/commit/{user.hub.head_commit()}"

    with user.instance() as instance:
        mirror = latest(instance, asset_key(CONFIG, "mirror"))
        lineage = latest(instance, summary_keys(CONFIG)["lineage"])
        centroids = latest(instance, asset_key(CONFIG, "centroids"))
        index = latest(instance, asset_key(CONFIG, "taxon_index"))
        slices = latest(instance, asset_key(CONFIG, "slices"))
        catalog = latest(instance, asset_key(CONFIG, "catalog"))

    for metadata in (mirror, lineage, centroids, index, slices):
        assert metadata["upstream_commit"] == dg.MetadataValue.url(page)
    assert mirror["size"].value.endswith("MiB") and isinstance(mirror["bytes"].value, int)
    for metadata in (mirror, slices):
        columns = described(metadata["dagster/column_schema"].value)
        assert list(columns) == CONTRACT and all(columns.values()), columns
    for metadata in (lineage, centroids, index, catalog):
        columns = described(metadata["dagster/column_schema"].value)
        assert all(columns.values()), columns

    rows = [record.data for record in lineage["preview"].value.records]
    assert 0 < len(rows) <= 20
    assert any(value == "NULL" for row in rows for value in row.values())
    images = [int(row["images"].replace(",", "")) for row in rows]
    assert images == sorted(images, reverse=True)
    centroid_columns = [c.name for c in centroids["preview"].value.schema.columns]
    assert "centroid" not in centroid_columns and "centroid_norm" in centroid_columns
    assert len(index["preview"].value.records) == 20
    [listed] = catalog["slices"].value.records
    assert listed.data["name"] == "family=Felidae"
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB)", listed.data["size"]), listed.data

    snippet = slices["read_with"].value
    assert str(slices["path"].value) in snippet
    assert "read_pandas('family=Felidae'" in snippet


def latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, dg.MetadataValue]:
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None, key
    return dict(event.asset_materialization.metadata)

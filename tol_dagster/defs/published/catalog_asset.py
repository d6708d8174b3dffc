"""Per-config catalog of published slices: the one writer of `catalog.parquet`, so parallel
slice runs never race on it; it lists the partitions of the slices asset and the slices of
whole ranks (`rank_slices`). It follows the slices by itself (`automation.CATALOG_CONDITION`);
the command line refreshes it after its own slice runs."""

from datetime import datetime

import dagster as dg
import pyarrow as pa

from tol_dagster.defs.columns import CATALOG_COLUMNS
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import OWNERS, table_preview, table_schema
from tol_dagster.defs.published.automation import CATALOG_CONDITION
from tol_dagster.defs.published.keys import published_group
from tol_dagster.defs.published.partitions import slice_partition_keys
from tol_dagster.defs.resources import StorageResource
from tol_dagster.slices import catalog_file, records
from tol_dagster.slices.rank_pass import RANK_PASS
from tol_dagster.store.disk import human_size
from tol_dagster.store.layout import Layout

#: Bump when a change of our code changes what the catalog holds (see derived_assets).
CATALOG_CODE_VERSION = "1"


def build_catalog_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "catalog"),
        deps=[asset_key(name, "slices"), asset_key(name, "rank_slices")],
        group_name=published_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        code_version=CATALOG_CODE_VERSION,
        automation_condition=CATALOG_CONDITION,
        description="One row per published slice: the table downstream code reads to find slices.",
    )
    @in_words
    def slice_catalog(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> dg.MaterializeResult:
        layout = storage.layout
        live = set(slice_partition_keys(context.instance, name)) | rank_slice_names(layout, name)
        for stale in set(catalog_file.read_catalog(layout, name).column("name").to_pylist()) - live:
            catalog_file.remove_entry(layout, name, stale)
        table = catalog_file.upsert_entries(layout, name, _entries(layout, name, live))
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(layout.catalog_path(name))),
                "dagster/row_count": dg.MetadataValue.int(table.num_rows),
                "dagster/column_schema": table_schema(table.schema, name, CATALOG_COLUMNS),
                "slices": table_preview(_catalog_preview(table)),
            }
        )

    return slice_catalog


def rank_slice_names(layout: Layout, name: str) -> set[str]:
    """The slices a rank pass published (`rank_slices`): live as long as their record is."""
    return {str(r["name"]) for r in records.slice_records(layout, name) if r.get(RANK_PASS)}


def _catalog_preview(table: pa.Table) -> pa.Table:
    """The catalog's columns a person scans, with each slice's size for people."""
    sizes = [human_size(size) for size in table.column("bytes").to_pylist()]
    shown = table.select(["name", "rows", "bytes", "upstream_commit", "built_at"])
    return shown.add_column(3, "size", pa.array(sizes, pa.string()))


def _entries(layout: Layout, name: str, live: set[str]) -> list[catalog_file.CatalogEntry]:
    """The catalog rows of the slices recorded as built that are still partitions."""
    return [
        catalog_file.CatalogEntry(
            config=name,
            name=str(r["name"]),
            rank=str(r["rank"]),
            value=str(r["value"]),
            path=str(r["path"]),
            rows=int(str(r["rows"])),
            bytes=int(str(r["bytes"])),
            sha256=str(r["sha256"]),
            upstream_commit=str(r["upstream_commit"]),
            built_at=datetime.fromisoformat(str(r["built_at"])),
        )
        for r in records.slice_records(layout, name)
        if r["name"] in live
    ]

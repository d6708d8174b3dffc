"""Per-config catalog of published slices: the one writer of `catalog.parquet`, so parallel
slice runs never race on it; it lists the partitions of the slices asset and the slices of
whole ranks (`rank_slices`). It follows the slices by itself (`automation.CATALOG_CONDITION`);
the command line refreshes it after its own slice runs."""

import dagster as dg
import pyarrow as pa

from tol_dagster.defs.columns import CATALOG_COLUMNS
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import OWNERS, PREVIEW_ROWS, table_preview, table_schema
from tol_dagster.defs.published.automation import CATALOG_CONDITION
from tol_dagster.defs.published.keys import published_group
from tol_dagster.defs.published.partitions import slice_partition_keys
from tol_dagster.defs.resources import StorageResource
from tol_dagster.slices import catalog_file, records
from tol_dagster.slices.rank_pass import RANK_PASS
from tol_dagster.store.disk import human_size

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
        partitions = set(slice_partition_keys(context.instance, name))
        live = (  # slices of a rank are live as long as their record is
            r
            for r in records.slice_records(layout, name)
            if r.get(RANK_PASS) or r["name"] in partitions
        )
        built = catalog_file.catalog_rows(layout, name, live)
        table = catalog_file.upsert_rows(layout, name, built, keep=partitions)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(layout.catalog_path(name))),
                "dagster/row_count": dg.MetadataValue.int(table.num_rows),
                "dagster/column_schema": table_schema(table.schema, name, CATALOG_COLUMNS),
                "slices": table_preview(_catalog_preview(table)),
            }
        )

    return slice_catalog


def _catalog_preview(table: pa.Table) -> pa.Table:
    """The catalog's columns a person scans, with each slice's size for people."""
    table = table.slice(0, PREVIEW_ROWS)  # a catalog may hold 868,000 species
    sizes = [human_size(size) for size in table.column("bytes").to_pylist()]
    shown = table.select(["name", "rows", "bytes", "upstream_commit", "built_at"])
    return shown.add_column(3, "size", pa.array(sizes, pa.string()))

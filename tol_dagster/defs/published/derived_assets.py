"""Per-config derived tables over the mirror: summaries, taxon index, centroids.

Rebuilt incrementally (per-file results cached by sha256), so after a resync only changed files
are scanned; each reads one pinned generation, whose name is its data version. They follow
every mirror materialization by themselves (`automation.DERIVED_CONDITION`).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import OWNERS, markdown_preview, table_schema
from tol_dagster.defs.published.automation import DERIVED_CONDITION
from tol_dagster.defs.published.keys import published_group, summary_keys
from tol_dagster.defs.resources import StorageResource
from tol_dagster.derived import built_from, centroids, summaries, taxon_index
from tol_dagster.store import generations
from tol_dagster.store.pins import PinnedGeneration

#: Bump when a change of our code changes what an asset writes: the UI then shows it stale
#: ("code version changed"). The per-file parts have their own version in their names
#: (`summaries.SUMMARY_PART`, ...), so results of an older logic are never reused.
SUMMARIES_CODE_VERSION = "1"
TAXON_INDEX_CODE_VERSION = "1"
CENTROIDS_CODE_VERSION = "1"


def build_derived_assets(name: str) -> list[dg.AssetsDefinition]:
    """The summaries, taxon index and centroids of config `name`."""
    return [build_summary_assets(name), build_taxon_index_asset(name), build_centroids_asset(name)]


def _derived_table(name: str, code_version: str) -> dict[str, Any]:
    """What every derived table's definition shares: read from the mirror, in the published
    group, rebuilt by automation after each mirror."""
    return {
        "deps": [asset_key(name, "mirror")],
        "group_name": published_group(name),
        "owners": OWNERS,
        "code_version": code_version,
        "automation_condition": DERIVED_CONDITION,
    }


def _built_metadata(path: Path, rows: int, pin: PinnedGeneration) -> dict[str, Any]:
    """What every derived table reports: where it is, its rows, the commit it was built from."""
    return {
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": dg.MetadataValue.int(rows),
        "upstream_commit": pin.commit,
    }


def _summary_preview(table: pa.Table) -> str:
    """The biggest buckets first when the table counts images."""
    if "images" in table.column_names:
        return markdown_preview(table.sort_by([(table.column_names[-1], "descending")]))
    return markdown_preview(table)


def build_summary_assets(name: str) -> dg.AssetsDefinition:
    keys = summary_keys(name)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                kinds={"duckdb", "parquet"},
                description=f"Summary table `{table}` of `{name}` (image counts; NULL holes kept as buckets).",
                **_derived_table(name, SUMMARIES_CODE_VERSION),
            )
            for table, key in keys.items()
        ],
        name=f"{asset_key(name, 'mirror').to_python_identifier()}_summaries",
    )
    @in_words
    def summary_tables(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> Iterator[dg.MaterializeResult]:
        layout = storage.layout
        with generations.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            result = summaries.build_summaries(files, layout, name)
            context.log.info(
                f"summaries of {name}: rescanned {len(result.recomputed)} of {len(files)} files"
            )
            built_from.save_built_from(layout, name, "summaries", pin, files)
            for table, key in keys.items():
                data = pq.read_table(result.paths[table])
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        **_built_metadata(result.paths[table], result.rows[table], pin),
                        "dagster/column_schema": table_schema(data.schema),
                        "files_rescanned": len(result.recomputed),
                        "preview": dg.MetadataValue.md(_summary_preview(data)),
                    },
                    data_version=dg.DataVersion(pin.name),
                )

    return summary_tables


def build_taxon_index_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "taxon_index"),
        kinds={"parquet"},
        description="(rank, value) -> file, row group, row range: lets a slice read only the row groups of its taxon.",
        **_derived_table(name, TAXON_INDEX_CODE_VERSION),
    )
    @in_words
    def index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        layout = storage.layout
        with generations.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            built = built_from.load_built_from(layout, name, "taxon_index")
            if built is None or built.generation != pin.name:
                built_from.keep_previous_index(layout, name)
            result = taxon_index.build_taxon_index(files, layout, name)
            built_from.save_built_from(layout, name, "taxon_index", pin, files)
            context.log.info(
                f"taxon index of {name}: re-indexed {len(result.recomputed)} of {len(files)} files"
            )
            return dg.MaterializeResult(
                metadata={
                    **_built_metadata(result.path, result.rows, pin),
                    "bytes": dg.MetadataValue.int(result.bytes),
                    "files_reindexed": len(result.recomputed),
                },
                data_version=dg.DataVersion(pin.name),
            )

    return index


def build_centroids_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "centroids"),
        kinds={"parquet", "numpy"},
        description=(
            "Mean embedding (float32) and image count per full lineage at species and genus level: "
            "one streaming pass, incremental per file."
        ),
        **_derived_table(name, CENTROIDS_CODE_VERSION),
    )
    @in_words
    def centroid_table(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> dg.MaterializeResult:
        layout = storage.layout
        with generations.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            schema = built_from.pinned_schema(layout, pin)
            dim = schema.field("emb").type.list_size
            result = centroids.build_centroids(files, layout, name, dim)
            context.log.info(
                f"centroids of {name}: read {len(result.recomputed)} of {len(files)} files"
            )
            return dg.MaterializeResult(
                metadata={
                    **_built_metadata(result.path, result.species + result.genus, pin),
                    "species": result.species,
                    "genera": result.genus,
                    "files_reread": len(result.recomputed),
                },
                data_version=dg.DataVersion(pin.name),
            )

    return centroid_table

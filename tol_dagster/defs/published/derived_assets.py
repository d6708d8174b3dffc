"""Per-config derived tables over the mirror: summaries, taxon index, centroids.

Rebuilt incrementally (per-file results cached by sha256), so after a resync only changed files
are scanned; each reads one pinned generation, whose name is its data version. They follow
every mirror materialization by themselves (`automation.DERIVED_CONDITION`).
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.defs.columns import CENTROID_COLUMNS, SUMMARY_COLUMNS, TAXON_INDEX_COLUMNS
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import (
    OWNERS,
    PREVIEW_ROWS,
    commit_url,
    table_preview,
    table_schema,
    with_size,
)
from tol_dagster.defs.published.automation import DERIVED_CONDITION
from tol_dagster.defs.published.keys import published_group, summary_keys
from tol_dagster.defs.resources import HubResource, StorageResource
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


def _built_metadata(
    path: Path, rows: int, pin: PinnedGeneration, hub: HubResource
) -> dict[str, Any]:
    """What every derived table reports: where it is, its rows, the commit it was built from."""
    return {
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": dg.MetadataValue.int(rows),
        "upstream_commit": commit_url(hub.endpoint, hub.repo_id, pin.commit),
    }


def _biggest_first(table: pa.Table) -> pa.Table:
    """The biggest buckets first when the table counts images (a NULL lineage among them)."""
    return table.sort_by([("images", "descending")]) if "images" in table.column_names else table


def centroid_preview(table: pa.Table) -> pa.Table:
    """Centroid rows with each vector shown by its norm and first values, not in full."""
    column = table.column("centroid").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    first = [", ".join(f"{x:.3f}" for x in vector[:4]) + ", …" for vector in vectors]
    position = table.schema.get_field_index("centroid")
    return (
        table.remove_column(position)
        .add_column(position, "centroid_norm", pa.array(np.linalg.norm(vectors, axis=1).round(3)))
        .add_column(position + 1, "centroid_head", pa.array(first, pa.string()))
    )


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
        context: dg.AssetExecutionContext, hub: HubResource, storage: StorageResource
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
                        **_built_metadata(result.paths[table], result.rows[table], pin, hub),
                        "dagster/column_schema": table_schema(
                            data.schema, name, SUMMARY_COLUMNS[table]
                        ),
                        "files_rescanned": len(result.recomputed),
                        "preview": table_preview(_biggest_first(data)),
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
    def index(
        context: dg.AssetExecutionContext, hub: HubResource, storage: StorageResource
    ) -> dg.MaterializeResult:
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
                    **_built_metadata(result.path, result.rows, pin, hub),
                    **with_size("bytes", result.bytes),
                    "files_reindexed": len(result.recomputed),
                    **_table_metadata(result.path, name, TAXON_INDEX_COLUMNS),
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
        context: dg.AssetExecutionContext, hub: HubResource, storage: StorageResource
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
                    **_built_metadata(result.path, result.species + result.genus, pin, hub),
                    "species": result.species,
                    "genera": result.genus,
                    "files_reread": len(result.recomputed),
                    **_table_metadata(result.path, name, CENTROID_COLUMNS, centroid_preview),
                },
                data_version=dg.DataVersion(pin.name),
            )

    return centroid_table


def _table_metadata(
    path: Path,
    config: str,
    columns: dict[str, str],
    shown: Callable[[pa.Table], pa.Table] = lambda table: table,
) -> dict[str, Any]:
    """A published table's described column schema and a preview of its first rows (read
    alone: the whole table can be large, the centroids at full scale gigabytes)."""
    parquet = pq.ParquetFile(path)
    first = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
    head = parquet.schema_arrow.empty_table() if first is None else pa.Table.from_batches([first])
    return {
        "dagster/column_schema": table_schema(parquet.schema_arrow, config, columns),
        "preview": table_preview(shown(head)),
    }

"""Per-config derived tables over the mirror: summaries, taxon index, centroids.

Rebuilt incrementally (per-file results cached by sha256), so after a resync only changed files
are scanned, in batches of steps any executor can spread (`derived_steps`); each reads one
pinned generation, whose name is its data version. They follow
every mirror materialization by themselves (`automation.DERIVED_CONDITION`).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.defs.columns import CENTROID_COLUMNS, SUMMARY_COLUMNS, TAXON_INDEX_COLUMNS
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
from tol_dagster.defs.published.derived_steps import (
    DerivedSteps,
    PartsWriter,
    Publisher,
    Publishing,
    build_derived_graph,
)
from tol_dagster.defs.published.keys import summary_keys
from tol_dagster.derived import built_from, centroids, summaries, taxon_index
from tol_dagster.store.layout import Layout
from tol_dagster.store.pins import PinnedGeneration

#: Bump when a change of our code changes what an asset writes: the UI then shows it stale
#: ("code version changed"). The per-file parts have their own version in their names
#: (`summaries.SUMMARY_PART`, ...), so results of an older logic are never reused.
SUMMARIES_CODE_VERSION = "1"
TAXON_INDEX_CODE_VERSION = "2"
CENTROIDS_CODE_VERSION = "1"


def build_derived_assets(name: str) -> list[dg.AssetsDefinition]:
    """The summaries, taxon index and centroids of config `name`."""
    return [build_summary_assets(name), build_taxon_index_asset(name), build_centroids_asset(name)]


def _built_metadata(path: Path, rows: int, run: Publishing) -> dict[str, Any]:
    """What every derived table reports: where it is, its rows, the commit it was built from."""
    return {
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": dg.MetadataValue.int(rows),
        "upstream_commit": commit_url(run.hub.endpoint, run.hub.repo_id, run.pin.commit),
    }


def _summary_metadata(
    run: Publishing, config: str, table: str, result: summaries.SummaryResult, rescanned: int
) -> dict[str, Any]:
    data = pq.read_table(result.paths[table])
    return {
        **_built_metadata(result.paths[table], result.rows[table], run),
        "dagster/column_schema": table_schema(data.schema, config, SUMMARY_COLUMNS[table]),
        "files_rescanned": rescanned,
        "preview": table_preview(_biggest_first(data)),
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


def _asset_out(
    key: dg.AssetKey, kinds: set[str], code_version: str, description: str
) -> dg.AssetOut:
    """A derived table's asset (in the published group: `build_derived_graph`), rebuilt by
    automation after each mirror."""
    return dg.AssetOut(
        key=key,
        kinds=kinds,
        description=description,
        owners=OWNERS,
        code_version=code_version,
        automation_condition=DERIVED_CONDITION,
    )


def build_summary_assets(name: str) -> dg.AssetsDefinition:
    keys = summary_keys(name)

    def publish(run: Publishing) -> dict[str, dict[str, Any]]:
        layout, pin = run.layout, run.pin
        files = pin.mirror_files()
        result = summaries.build_summaries(files, layout, name)
        rescanned = run.files_computed(result.recomputed)
        run.log(f"summaries of {name}: rescanned {rescanned} of {len(files)} files")
        built_from.save_built_from(layout, name, "summaries", pin, files)
        return {table: _summary_metadata(run, name, table, result, rescanned) for table in keys}

    steps = DerivedSteps(
        node=f"{asset_key(name, 'mirror').to_python_identifier()}_summaries",
        kind="summaries",
        part=summaries.SUMMARY_PART,
        write_parts=lambda files, layout, pin: summaries.write_parts(files, layout, name),
        publish=publish,
    )
    outs = {
        table: _asset_out(
            key,
            {"duckdb", "parquet"},
            SUMMARIES_CODE_VERSION,
            f"Summary table `{table}` of `{name}` (image counts; NULL holes kept as buckets).",
        )
        for table, key in keys.items()
    }
    return build_derived_graph(name, steps, outs)


def build_taxon_index_asset(name: str) -> dg.AssetsDefinition:
    def publish(run: Publishing) -> dict[str, dict[str, Any]]:
        layout, pin = run.layout, run.pin
        files = pin.mirror_files()
        built = built_from.load_built_from(layout, name, "taxon_index")
        if built is None or built.generation != pin.name:
            built_from.keep_previous_index(layout, name)
        result = taxon_index.build_taxon_index(files, layout, name)
        built_from.save_built_from(layout, name, "taxon_index", pin, files)
        reindexed = run.files_computed(result.recomputed)
        run.log(f"taxon index of {name}: re-indexed {reindexed} of {len(files)} files")
        return {
            "taxon_index": {
                **_built_metadata(result.path, result.rows, run),
                **with_size("bytes", result.bytes),
                "files_reindexed": reindexed,
                **_table_metadata(result.path, name, TAXON_INDEX_COLUMNS),
            }
        }

    return _one_table(
        name,
        "taxon_index",
        taxon_index.INDEX_PART,
        lambda files, layout, pin: taxon_index.write_parts(files, layout, name),
        publish,
        _asset_out(
            asset_key(name, "taxon_index"),
            {"parquet"},
            TAXON_INDEX_CODE_VERSION,
            "(rank, value) -> file, row group, row range: lets a slice read only the row groups of its taxon.",
        ),
    )


def build_centroids_asset(name: str) -> dg.AssetsDefinition:
    def dim(layout: Layout, pin: PinnedGeneration) -> int:
        return built_from.pinned_schema(layout, pin).field("emb").type.list_size

    def publish(run: Publishing) -> dict[str, dict[str, Any]]:
        layout, pin = run.layout, run.pin
        files = pin.mirror_files()
        result = centroids.build_centroids(files, layout, name, dim(layout, pin))
        reread = run.files_computed(result.recomputed)
        run.log(f"centroids of {name}: read {reread} of {len(files)} files")
        return {
            "centroids": {
                **_built_metadata(result.path, result.species + result.genus, run),
                "species": result.species,
                "genera": result.genus,
                "files_reread": reread,
                **_table_metadata(result.path, name, CENTROID_COLUMNS, centroid_preview),
            }
        }

    return _one_table(
        name,
        "centroids",
        centroids.SUMS_PART,
        lambda files, layout, pin: centroids.write_parts(files, layout, name, dim(layout, pin)),
        publish,
        _asset_out(
            asset_key(name, "centroids"),
            {"parquet", "numpy"},
            CENTROIDS_CODE_VERSION,
            "Mean embedding (float32) and image count per full lineage at species and genus "
            "level: one streaming pass, incremental per file.",
        ),
    )


def _one_table(
    name: str,
    table: str,
    part: str,
    write_parts: PartsWriter,
    publish: Publisher,
    out: dg.AssetOut,
) -> dg.AssetsDefinition:
    """The graph of a derived table that is one asset, `tol/<name>/<table>`."""
    steps = DerivedSteps(
        node=asset_key(name, table).to_python_identifier(),
        kind=table,
        part=part,
        write_parts=write_parts,
        publish=publish,
    )
    return build_derived_graph(name, steps, {table: out})


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

"""Per-config published assets over the mirror: summaries, taxon index, centroids, slices, catalog.

Summaries, index and centroids are rebuilt incrementally (per-file results cached by sha256),
so after a resync only changed files are scanned. Slices are dynamic partitions keyed by the
slice key; each is checked before its atomic publish. The catalog is its own asset, the one
writer of catalog.parquet, so parallel slice runs never race on it.
"""

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tol_dagster import catalog
from tol_dagster.defs.keys import asset_key, published_group, safe_name, slices_partitions_name
from tol_dagster.defs.metadata import check_result, table_schema
from tol_dagster.defs.mirror_assets import OWNERS
from tol_dagster.defs.resources import StorageResource
from tol_dagster.derived import centroids, summaries, taxon_index
from tol_dagster.errors import EmptySliceError, ValidationFailed
from tol_dagster.slices import builds as published
from tol_dagster.slices.checks import (
    EMB_MATCHES_MIRROR,
    ROWS_MATCH_SUMMARY,
    ROWS_SATISFY_KEY,
    SCHEMA_MATCHES_MIRROR,
    UUIDS_UNIQUE,
    slice_checks,
)
from tol_dagster.slices.extract import expected_count, extract_slice, refuse_empty
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store import generations as mirror
from tol_dagster.validation.alignment import check_configs_aligned
from tol_dagster.validation.checks import CheckResult

SLICE_CHECKS = {
    ROWS_MATCH_SUMMARY: "Rows equal the taxon's count from the index/summary.",
    ROWS_SATISFY_KEY: "Every row satisfies the slice key.",
    UUIDS_UNIQUE: "No uuid appears twice in the slice.",
    SCHEMA_MATCHES_MIRROR: "The slice has the mirror's exact schema.",
    EMB_MATCHES_MIRROR: (
        "Every row is a mirror row with the same emb bytes, in mirror order: the slice read back "
        "by pyarrow (independent of the splicer and the page reader), its per-row emb digests "
        "compared with those the gate kept for the mirror files."
    ),
}


class SliceRunConfig(dg.Config):
    """Run config of a slice run (`tol-dagster slice KEY --allow-empty` sets it)."""

    allow_empty: bool = Field(
        default=False,
        description=(
            "Publish a 0-row slice when no row of the mirror matches the key. Off: such a key "
            "(a misspelt taxon, most often) fails the run, naming close matches."
        ),
    )


def _preview(table: pa.Table, limit: int = 10) -> str:
    """The first rows of a small table as markdown, for the UI."""
    rows = table.slice(0, limit).to_pylist()
    if not rows:
        return "(empty)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows
    ]
    return "\n".join(lines)


def build_published_assets(name: str) -> list[dg.AssetsDefinition]:
    """The published assets of config `name`."""
    mirror_key = asset_key(name, "mirror")
    index_key = asset_key(name, "taxon_index")
    slices_key = asset_key(name, "slices")
    catalog_key = asset_key(name, "catalog")
    group = published_group(name)
    summary_keys = {table: asset_key(name, "summary", table) for table in summaries.SUMMARY_NAMES}

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                deps=[mirror_key],
                group_name=group,
                kinds={"duckdb", "parquet"},
                owners=OWNERS,
                description=f"Summary table `{table}` of `{name}` (image counts; NULL holes kept as buckets).",
            )
            for table, key in summary_keys.items()
        ],
        name=f"{mirror_key.to_python_identifier()}_summaries",
    )
    def summary_tables(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> Iterator[dg.MaterializeResult]:
        layout = storage.layout
        with mirror.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            result = summaries.build_summaries(files, layout, name)
            context.log.info(
                f"summaries of {name}: rescanned {len(result.recomputed)} of {len(files)} files"
            )
            published.save_built_from(layout, name, "summaries", pin, files)
            for table, key in summary_keys.items():
                data = pq.read_table(result.paths[table])
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        "path": dg.MetadataValue.path(str(result.paths[table])),
                        "dagster/row_count": dg.MetadataValue.int(result.rows[table]),
                        "dagster/column_schema": table_schema(data.schema),
                        "files_rescanned": len(result.recomputed),
                        "upstream_commit": pin.commit,
                        "preview": dg.MetadataValue.md(
                            _preview(data.sort_by([(data.column_names[-1], "descending")]))
                        )
                        if "images" in data.column_names
                        else dg.MetadataValue.md(_preview(data)),
                    },
                    data_version=dg.DataVersion(pin.name),
                )

    @dg.asset(
        key=index_key,
        deps=[mirror_key],
        group_name=group,
        kinds={"parquet"},
        owners=OWNERS,
        description="(rank, value) -> file, row group, row range: lets a slice read only the row groups of its taxon.",
    )
    def index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        layout = storage.layout
        with mirror.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            built = published.load_built_from(layout, name, "taxon_index")
            if built is None or built.generation != pin.name:
                published.keep_previous_index(layout, name)
            result = taxon_index.build_taxon_index(files, layout, name)
            published.save_built_from(layout, name, "taxon_index", pin, files)
            context.log.info(
                f"taxon index of {name}: re-indexed {len(result.recomputed)} of {len(files)} files"
            )
            return dg.MaterializeResult(
                metadata={
                    "path": dg.MetadataValue.path(str(result.path)),
                    "dagster/row_count": dg.MetadataValue.int(result.rows),
                    "bytes": dg.MetadataValue.int(result.bytes),
                    "files_reindexed": len(result.recomputed),
                    "upstream_commit": pin.commit,
                },
                data_version=dg.DataVersion(pin.name),
            )

    @dg.asset(
        key=asset_key(name, "centroids"),
        deps=[mirror_key],
        group_name=group,
        kinds={"parquet", "numpy"},
        owners=OWNERS,
        description=(
            "Mean embedding (float32) and image count per full lineage at species and genus level: "
            "one streaming pass, incremental per file."
        ),
    )
    def centroid_table(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> dg.MaterializeResult:
        layout = storage.layout
        with mirror.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            schema = published.pinned_schema(layout, pin)
            dim = schema.field("emb").type.list_size
            result = centroids.build_centroids(files, layout, name, dim)
            context.log.info(
                f"centroids of {name}: read {len(result.recomputed)} of {len(files)} files"
            )
            return dg.MaterializeResult(
                metadata={
                    "path": dg.MetadataValue.path(str(result.path)),
                    "species": result.species,
                    "genera": result.genus,
                    "dagster/row_count": dg.MetadataValue.int(result.species + result.genus),
                    "files_reread": len(result.recomputed),
                    "upstream_commit": pin.commit,
                },
                data_version=dg.DataVersion(pin.name),
            )

    slice_partitions = dg.DynamicPartitionsDefinition(name=slices_partitions_name(name))

    @dg.asset(
        key=slices_key,
        deps=[mirror_key, index_key, summary_keys["lineage"]],
        partitions_def=slice_partitions,
        group_name=group,
        kinds={"parquet"},
        owners=OWNERS,
        description=(
            "Per-taxon slices of the mirror, one partition per slice key (`family=Felidae`, "
            "`kingdom=Animalia/genus=Morus`), with the mirror's exact schema and sort order."
        ),
        check_specs=[
            dg.AssetCheckSpec(check, asset=slices_key, blocking=True, description=description)
            for check, description in SLICE_CHECKS.items()
        ],
    )
    def slices(
        context: dg.AssetExecutionContext, config: SliceRunConfig, storage: StorageResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        layout = storage.layout
        key = parse_slice_key(context.partition_key)
        with mirror.pin_generation(layout, name) as pin:  # one generation, leased
            files = pin.mirror_files()
            index_table: pa.Table | None = taxon_index.read_taxon_index(layout, name)
            built = published.load_built_from(layout, name, "taxon_index")
            if built is not None and built.files != pin.files:
                context.log.warning(
                    f"the taxon index was built from generation {built.generation}, not "
                    f"{pin.name}: finding the rows by scanning (materialize the index to speed up)"
                )
                index_table = None  # its row ranges describe other bytes
            schema = published.pinned_schema(layout, pin)
            expected = expected_count(key, index_table, files)
            allow_empty = config.allow_empty or published.allowed_empty(layout, name, key.name)
            if not allow_empty:
                try:
                    refuse_empty(key, index_table, expected)
                except EmptySliceError as error:
                    raise dg.Failure(
                        description=str(error),
                        metadata={"close_matches": dg.MetadataValue.json(list(error.matches))},
                        allow_retries=False,
                    ) from error
            out = layout.slices_dir(name) / key.file_name
            verdicts: list[CheckResult] = []

            def verify(path: Path) -> list[CheckResult]:
                verdicts.extend(
                    slice_checks(
                        path, key, expected, schema, files, index_table, layout=layout, config=name
                    )
                )
                return verdicts

            try:
                result = extract_slice(key, files, index_table, out, schema=schema, verify=verify)
            except ValidationFailed:
                for verdict in verdicts:
                    yield check_result(verdict, slices_key)
                raise
        for warning in result.warnings:
            context.log.warning(warning)
        built_at = datetime.now(UTC)
        published.save_slice_record(
            layout,
            name,
            {
                "config": name,
                "name": key.name,
                "rank": key.rank,
                "value": key.value,
                "path": str(result.path),
                "rows": result.rows,
                "bytes": result.bytes,
                "sha256": result.sha256,
                "upstream_commit": pin.commit,
                "built_at": built_at.isoformat(),
                "generation": pin.name,
                "allow_empty": allow_empty,
            },
        )
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(result.path)),
                "dagster/row_count": dg.MetadataValue.int(result.rows),
                "bytes": dg.MetadataValue.int(result.bytes),
                "sha256": result.sha256,
                "upstream_commit": pin.commit,
                "source_files": dg.MetadataValue.json(list(result.source_files)),
                "row_groups_read": result.row_groups_read,
                "seconds": round(result.seconds, 3),
                "emb_compression": result.emb_compression,
                "dagster/column_schema": table_schema(schema),
                "read_with": dg.MetadataValue.md(
                    f"```python\nimport duckdb\nduckdb.sql(\"SELECT * FROM read_parquet('{result.path}')\")\n```"
                ),
            },
            data_version=dg.DataVersion(result.sha256),
        )
        for verdict in verdicts:
            yield check_result(verdict, slices_key)

    @dg.asset(
        key=catalog_key,
        deps=[slices_key],
        group_name=group,
        kinds={"parquet"},
        owners=OWNERS,
        description="One row per published slice: the table downstream code reads to find slices.",
    )
    def slice_catalog(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> dg.MaterializeResult:
        layout = storage.layout
        live = set(context.instance.get_dynamic_partitions(slices_partitions_name(name)))
        for stale in set(catalog.read_catalog(layout, name).column("name").to_pylist()) - live:
            catalog.remove_entry(layout, name, stale)
        table = catalog.upsert_entries(
            layout,
            name,
            [
                catalog.CatalogEntry(
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
                for r in published.slice_records(layout, name)
                if r["name"] in live
            ],
        )
        path = layout.catalog_path(name)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": dg.MetadataValue.int(table.num_rows),
                "dagster/column_schema": table_schema(table.schema),
                "slices": dg.MetadataValue.md(
                    _preview(table.select(["name", "rows", "bytes", "upstream_commit"]), 50)
                ),
            }
        )

    return [summary_tables, index, centroid_table, slices, slice_catalog]


def build_alignment_checks(configs: Sequence[str]) -> list[dg.AssetChecksDefinition]:
    """When several configs are mirrored: each holds the first one's uuids in the same order
    (upstream promises 1:1 alignment by uuid)."""
    return [_alignment_check(configs[0], other) for other in configs[1:]]


def _alignment_check(reference: str, other: str) -> dg.AssetChecksDefinition:
    name = f"uuids_aligned_with_{safe_name(reference)}"

    @dg.asset_check(
        asset=asset_key(other, "mirror"),
        name=name,
        additional_deps=[asset_key(reference, "mirror")],
        description=f"Same uuids in the same order as `{reference}`.",
    )
    def aligned(storage: StorageResource) -> dg.AssetCheckResult:
        layout = storage.layout
        with (
            mirror.pin_generation(layout, reference) as pin_a,
            mirror.pin_generation(layout, other) as pin_b,
        ):
            result = check_configs_aligned(
                pin_a.paths(), pin_b.paths(), name_a=reference, name_b=other
            )
        return check_result(replace(result, check=name), asset_key(other, "mirror"))

    return aligned

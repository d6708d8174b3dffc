"""Per-config slices of the mirror: one dynamic partition per slice key, each checked (blocking
checks) before its atomic publish, and recorded for the catalog.

Which slices a new mirror generation touches is decided by `mirror_change_sensor` from the
data (`refresh`); a slice can also be built from the UI or with `tol-dagster slice KEY`.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import (
    OWNERS,
    blocking_checks,
    check_result,
    commit_url,
    table_schema,
    with_size,
)
from tol_dagster.defs.published.keys import published_group, slice_inputs
from tol_dagster.defs.published.partitions import slice_partitions
from tol_dagster.defs.resources import HubResource, StorageResource
from tol_dagster.derived import built_from, taxon_index
from tol_dagster.errors import ValidationFailed
from tol_dagster.slices import records
from tol_dagster.slices.checks import (
    ROWS_MATCH_INDEX_COUNT,
    ROWS_SATISFY_KEY,
    SCHEMA_MATCHES_MIRROR,
    UUIDS_UNIQUE,
    slice_checks,
)
from tol_dagster.slices.counts import expected_count, refuse_empty
from tol_dagster.slices.emb_check import EMB_MATCHES_MIRROR
from tol_dagster.slices.extract import SliceResult, extract_slice
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store import generations
from tol_dagster.store.layout import Layout
from tol_dagster.store.pins import PinnedGeneration
from tol_dagster.validation.checks import CheckResult

#: Bump when a change of our code changes what a slice holds (see derived_assets).
SLICES_CODE_VERSION = "1"

SLICE_CHECKS = {
    ROWS_MATCH_INDEX_COUNT: "Rows equal the taxon index's count of the rows matching the key.",
    ROWS_SATISFY_KEY: "Every row satisfies the slice key.",
    UUIDS_UNIQUE: "No uuid appears twice in the slice.",
    SCHEMA_MATCHES_MIRROR: "The slice has the mirror's exact schema.",
    EMB_MATCHES_MIRROR: (
        "Every row is a mirror row with the same emb bytes, in mirror order: the slice read back "
        "by pyarrow (independent of the splicer and the page reader) and matched, by uuid, with "
        "the emb digests the gate kept for the mirror files (row groups copied whole: by their "
        "bytes)."
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


def build_slices_asset(name: str) -> dg.AssetsDefinition:
    """`tol/<name>/slices`, partitioned by slice key."""
    slices_key = asset_key(name, "slices")

    @dg.asset(
        key=slices_key,
        deps=slice_inputs(name),
        partitions_def=slice_partitions(name),
        group_name=published_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        code_version=SLICES_CODE_VERSION,
        description=(
            "Per-taxon slices of the mirror, one partition per slice key (`family=Felidae`, "
            "`kingdom=Animalia/genus=Morus`), with the mirror's exact schema and sort order."
        ),
        check_specs=blocking_checks(slices_key, SLICE_CHECKS),
    )
    @in_words
    def slices(
        context: dg.AssetExecutionContext,
        config: SliceRunConfig,
        hub: HubResource,
        storage: StorageResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from _publish_slice(context, config, hub, storage.layout, name)

    return slices


def _publish_slice(
    context: dg.AssetExecutionContext,
    config: SliceRunConfig,
    hub: HubResource,
    layout: Layout,
    name: str,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Extract the partition's slice from one pinned generation, check it, publish it, record it."""
    slices_key = asset_key(name, "slices")
    key = parse_slice_key(context.partition_key)
    with generations.pin_generation(layout, name) as pin:  # one generation, leased
        files = pin.mirror_files()
        index_table = _usable_index(context, layout, name, pin)
        schema = built_from.pinned_schema(layout, pin)
        expected = expected_count(key, index_table, files)
        allow_empty = config.allow_empty or records.allowed_empty(layout, name, key.name)
        if not allow_empty:
            refuse_empty(key, index_table, expected)
        verdicts: list[CheckResult] = []

        def verify(path: Path) -> list[CheckResult]:
            verdicts.extend(
                slice_checks(
                    path, key, expected, schema, files, index_table, layout=layout, config=name
                )
            )
            return verdicts

        out = layout.slices_dir(name) / key.file_name
        try:
            result = extract_slice(key, files, index_table, out, schema=schema, verify=verify)
        except ValidationFailed:
            for verdict in verdicts:
                yield check_result(verdict, slices_key)
            raise
    for warning in result.warnings:
        context.log.warning(warning)
    record = records.slice_record(
        name, key, result, commit=pin.commit, generation=pin.name, allow_empty=allow_empty
    )
    records.save_slice_record(layout, name, record)
    yield dg.MaterializeResult(
        metadata={
            **_slice_metadata(key, result, schema, name),
            "upstream_commit": commit_url(hub.endpoint, hub.repo_id, pin.commit),
        },
        data_version=dg.DataVersion(result.sha256),
    )
    for verdict in verdicts:
        yield check_result(verdict, slices_key)


def _usable_index(
    context: dg.AssetExecutionContext, layout: Layout, name: str, pin: PinnedGeneration
) -> pa.Table | None:
    """The taxon index, if it describes the pinned generation's files; else None (scan)."""
    index_table: pa.Table | None = taxon_index.read_taxon_index(layout, name)
    built = built_from.load_built_from(layout, name, "taxon_index")
    if built is not None and built.files != pin.files:
        context.log.warning(
            f"the taxon index was built from generation {built.generation}, not "
            f"{pin.name}: finding the rows by scanning (materialize the index to speed up)"
        )
        return None  # its row ranges describe other bytes
    return index_table


def _slice_metadata(
    key: SliceKey, result: SliceResult, schema: pa.Schema, config: str
) -> dict[str, Any]:
    return {
        "path": dg.MetadataValue.path(str(result.path)),
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        **with_size("bytes", result.bytes),
        "sha256": result.sha256,
        "source_files": dg.MetadataValue.json(list(result.source_files)),
        "row_groups_read": result.row_groups_read,
        "seconds": round(result.seconds, 3),
        "emb_compression": result.emb_compression,
        "dagster/column_schema": table_schema(schema, config),
        "read_with": dg.MetadataValue.md(read_with(key, result.path, config)),
    }


def read_with(key: SliceKey, path: Path, config: str) -> str:
    """How to read the slice, whole (markdown: the UI shows it unclipped, and it can be copied):
    by its key through the catalog, or the file itself."""
    return (
        "```python\n"
        "from tol_dagster.catalog import read_pandas\n"
        f"read_pandas({key.name!r}, config={config!r})\n"
        "# or the file itself:\n"
        "import duckdb\n"
        f"duckdb.read_parquet({str(path)!r})\n"
        "```"
    )

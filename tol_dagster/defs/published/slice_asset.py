"""Per-config slices of the mirror: one dynamic partition per slice key, each checked (blocking
checks) before its atomic publish, and recorded for the catalog.

Which slices a new mirror generation touches is decided by `mirror_change_sensor` from the
data (`refresh`); a slice can also be built from the UI or with `tol-dagster slice KEY`.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from tol_dagster import progress
from tol_dagster.defs.batch_steps import batch_files, files_metadata, mirror_file_batches
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.defs.metadata import (
    OWNERS,
    blocking_checks,
    check_result,
    commit_url,
    table_schema,
    versioned_output,
    with_size,
    worker_metadata,
)
from tol_dagster.defs.published.keys import published_group, summary_keys
from tol_dagster.defs.published.partitions import slice_partitions
from tol_dagster.defs.resources import STEP_IO, HubResource, StepsResource, StorageResource
from tol_dagster.derived import built_from, taxon_index
from tol_dagster.errors import SliceSpecError, ValidationFailed
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
from tol_dagster.slices.extract import Segment, SliceResult, assemble_slice, extract_segment
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.slices.locate import files_to_read, index_entries
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


@dataclass(frozen=True)
class PlannedSlice:
    """What `plan` passes to every `extract` step and to `publish`: small values only (the
    index's entries of this key, not the whole index)."""

    generation: str
    expected: int
    allow_empty: bool
    entries: pa.Table | None  # None: the index does not describe the generation (scan)


def build_slices_asset(name: str) -> dg.AssetsDefinition:
    """`tol/<name>/slices`, partitioned by slice key: a graph of steps, `plan` (the files that
    may hold the key's rows, in batches), one `extract` step per batch (its files' rows, a
    segment), then `publish` (the segments spliced into one file, checked, published
    atomically, recorded). Any executor can spread the batches; the slice is the same bytes."""
    slices_key = asset_key(name, "slices")
    specs = blocking_checks(slices_key, SLICE_CHECKS)
    plan, extract, publish = _plan_op(name), _extract_op(name), _publish_op(name, specs)

    @dg.config_mapping
    def to_plan(config: SliceRunConfig) -> dict[str, Any]:
        """A slice run's config (`ops.<this asset>.config`), for the steps that read it."""
        given = {"config": {"allow_empty": config.allow_empty}}
        return {plan.name: given}

    @dg.graph_asset(
        key=slices_key,
        ins={
            "mirror": dg.AssetIn(asset_key(name, "mirror"), dagster_type=dg.Nothing),
            "taxon_index": dg.AssetIn(asset_key(name, "taxon_index"), dagster_type=dg.Nothing),
            "lineage": dg.AssetIn(summary_keys(name)["lineage"], dagster_type=dg.Nothing),
        },
        partitions_def=slice_partitions(name),
        group_name=published_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        code_version=SLICES_CODE_VERSION,
        description=(
            "Per-taxon slices of the mirror, one partition per slice key (`family=Felidae`, "
            "`kingdom=Animalia/genus=Morus`), with the mirror's exact schema and sort order."
        ),
        check_specs=specs,
        config=to_plan,
    )
    def slices(mirror, taxon_index, lineage):  # untyped: Nothing inputs, from the AssetIns
        planned, batch = plan(mirror=mirror, taxon_index=taxon_index, lineage=lineage)
        done = publish(planned, batch.map(lambda files: extract(planned, files)).collect())
        return {
            "result": done.result,
            **{spec.get_python_identifier(): getattr(done, spec.name) for spec in specs},
        }

    return slices


def _plan_op(name: str) -> dg.OpDefinition:
    @dg.op(
        name=f"plan_slice_{safe_name(name)}",
        ins={
            "mirror": dg.In(dg.Nothing),
            "taxon_index": dg.In(dg.Nothing),
            "lineage": dg.In(dg.Nothing),
        },
        out={
            "planned": dg.Out(io_manager_key=STEP_IO),
            "batch": dg.DynamicOut(io_manager_key=STEP_IO),
        },
    )
    @in_words
    def plan(
        context: dg.OpExecutionContext,
        config: SliceRunConfig,
        storage: StorageResource,
        steps: StepsResource,
    ) -> Iterator[dg.Output[PlannedSlice] | dg.DynamicOutput[object]]:
        """Pin the generation, refuse a key without rows (unless allowed), batch the files that
        may hold its rows."""
        layout = storage.layout
        key = canonical_key(context.partition_key)
        with generations.pin_generation(layout, name) as pin:  # re-leased by each step
            files = pin.mirror_files()
            index_table = _usable_index(context, layout, name, pin)
            expected = expected_count(key, index_table, files)
            allow_empty = config.allow_empty or records.allowed_empty(layout, name, key.name)
            if not allow_empty:
                refuse_empty(key, index_table, expected)
            to_read = files_to_read(key, files, index_table)
            batched = list(mirror_file_batches(to_read, steps.policy()))  # sized in the lease
        progress.start("slice", what=key.name)  # the segments' rows advance it
        entries = None if index_table is None else index_entries(key, index_table)
        yield dg.Output(PlannedSlice(pin.name, expected, allow_empty, entries), "planned")
        yield from batched

    return plan


def _extract_op(name: str) -> dg.OpDefinition:
    @dg.op(
        name=f"extract_slice_{safe_name(name)}",
        ins={"planned": dg.In(), "files": dg.In(dg.Any)},
        out=dg.Out(io_manager_key=STEP_IO),
    )
    @in_words
    def extract(
        context: dg.OpExecutionContext,
        storage: StorageResource,
        planned: PlannedSlice,
        files: tuple[str, ...],
    ) -> dg.Output[Segment]:
        """The key's rows in one batch of files, as a segment; which worker did it goes in the
        metadata."""
        layout = storage.layout
        key = parse_slice_key(context.partition_key)
        out = _segments_dir(layout, context.run_id) / f"{context.get_mapping_key()}.parquet"
        with generations.pin_named(layout, name, planned.generation) as pin:
            chosen = batch_files(pin, files)
            schema = built_from.pinned_schema(layout, pin)
            segment = extract_segment(key, chosen, planned.entries, out, schema=schema)
            read = files_metadata(chosen)
        rows = sum(count for _, count in segment.rows_by_file)
        return dg.Output(segment, metadata={**worker_metadata(), **read, "dagster/row_count": rows})

    return extract


def _publish_op(name: str, specs: list[dg.AssetCheckSpec]) -> dg.OpDefinition:
    slices_key = asset_key(name, "slices")

    @dg.op(
        name=f"publish_slice_{safe_name(name)}",
        ins={"planned": dg.In(), "segments": dg.In(dg.Any)},
        out={"result": dg.Out(dg.Nothing), **{spec.name: dg.Out(dg.Nothing) for spec in specs}},
    )
    @in_words
    def publish(
        context: dg.OpExecutionContext,
        hub: HubResource,
        storage: StorageResource,
        planned: PlannedSlice,
        segments: list[Segment],
    ) -> Iterator[dg.Output[None] | dg.AssetCheckResult]:
        """Splice the segments into the slice, check it, publish it, record it."""
        layout = storage.layout
        key = parse_slice_key(context.partition_key)
        verdicts: list[CheckResult] = []
        try:
            with generations.pin_named(layout, name, planned.generation) as pin:
                schema = built_from.pinned_schema(layout, pin)
                result = _assembled(layout, name, key, planned, pin, schema, segments, verdicts)
        except ValidationFailed:
            for verdict in verdicts:
                yield check_result(verdict, slices_key)
            raise
        for warning in result.warnings:
            context.log.warning(warning)
        record = records.slice_record(
            name, key, result, commit=pin.commit, generation=pin.name,
            allow_empty=planned.allow_empty,
        )  # fmt: skip
        records.save_slice_record(layout, name, record)
        metadata = {
            **_slice_metadata(key, result, schema, name),
            "upstream_commit": commit_url(hub.endpoint, hub.repo_id, pin.commit),
            "segments": len(segments),
        }
        yield versioned_output("result", metadata, result.sha256)
        for verdict in verdicts:
            yield check_result(verdict, slices_key)

    return publish


def _assembled(
    layout: Layout,
    name: str,
    key: SliceKey,
    planned: PlannedSlice,
    pin: PinnedGeneration,
    schema: pa.Schema,
    segments: list[Segment],
    verdicts: list[CheckResult],
) -> SliceResult:
    """The slice spliced from `segments`, its checks' verdicts added to `verdicts`, published
    at its path if they pass (ValidationFailed if not); the segments removed either way."""
    started = time.perf_counter()
    files = pin.mirror_files()

    def verify(path: Path) -> list[CheckResult]:
        verdicts.extend(
            slice_checks(
                path, key, planned.expected, schema, files, planned.entries,
                layout=layout, config=name,
            )
        )  # fmt: skip
        return verdicts

    ordered = _in_batch_order(segments)
    out = layout.slices_dir(name) / key.file_name
    try:
        return assemble_slice(key, ordered, out, schema=schema, verify=verify, started=started)
    finally:  # published or refused, the segments (a kingdom's: gigabytes) have served
        for segment in segments:
            segment.path.unlink(missing_ok=True)


def _in_batch_order(segments: list[Segment]) -> list[Segment]:
    """`segments` in the mirror's order: by their batch's number (`collect` keeps no order)."""
    return sorted(segments, key=lambda s: int(s.path.stem.rsplit("_", 1)[1]))


def _segments_dir(layout: Layout, run_id: str) -> Path:
    """Where a slice run's steps write their segments: under the run's step outputs, which
    every worker shares and cleanup removes after a week."""
    return layout.step_outputs_dir() / run_id / "slice_segments"


def _usable_index(
    context: dg.OpExecutionContext, layout: Layout, name: str, pin: PinnedGeneration
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


def canonical_key(text: str) -> SliceKey:
    """The partition's slice key; SliceSpecError if `text` spells it another way: a slice is
    published, recorded and catalogued under its canonical name, so a partition added by hand
    as `genus=Morus/kingdom=Animalia` published a file no catalog row or audit ever named."""
    key = parse_slice_key(text)
    if key.name != text:
        raise SliceSpecError(
            f"partition {text!r} spells slice {key.name!r} another way: remove it "
            f"(`tol-dagster slices remove {text!r}`) and add {key.name!r} (conditions from the "
            "top rank down, a '/' inside a value as %2F)"
        )
    return key

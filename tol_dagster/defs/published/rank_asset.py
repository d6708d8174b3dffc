"""`tol/<config>/rank_slices`: a whole rank published in one run, one partition per rank
(`family`, `genus`, …), a slice per value of that rank (see `slices.rank_pass`).

One materialization per rank, not one partition per value: Dagster's bookkeeping costs tens
of ms per partition before any byte moves, more than the data work of most values (README,
"A whole rank in one pass"). Each value's slice is still checked and published on its own and
gets its catalog row; the run's metadata lists them. Single keys stay partitions of
`tol/<config>/slices`.
"""

import heapq
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from tol_dagster import progress
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import OWNERS, PREVIEW_ROWS, commit_url, table_preview, with_size
from tol_dagster.defs.published.keys import published_group, slice_inputs
from tol_dagster.defs.published.partitions import RANK_PARTITIONS, slice_partition_keys
from tol_dagster.defs.resources import HubResource, StepsResource, StorageResource
from tol_dagster.derived import built_from, summaries, taxon_index
from tol_dagster.errors import SettingsError, StoreError
from tol_dagster.slices import records
from tol_dagster.slices.rank_pass import RankResult, publish_rank
from tol_dagster.slices.rank_plan import RankPlan, plan_rank
from tol_dagster.store import generations
from tol_dagster.store.disk import human_size
from tol_dagster.store.layout import Layout

#: Bump when a change of our code changes what a rank's slices hold (see derived_assets).
RANK_SLICES_CODE_VERSION = "2"
#: Names of the slices a pass removed that its metadata lists (raising `min_rows` may remove
#: most of a rank).
REMOVED_SHOWN = 100
#: Values no key can name that the warning of a pass shows.
UNNAMED_SHOWN = 5


class RankRunConfig(dg.Config):
    """Run config of a rank run (`tol-dagster slices add-rank RANK --min-rows N` sets it)."""

    min_rows: int | None = Field(
        default=None,
        description=(
            "Publish only the values with at least this many rows. Empty: the rank's last "
            "setting (the slices file's `ranks:` entry, or 1)."
        ),
    )
    rebuild: list[str] = Field(
        default=[],
        description=(
            "Names of this rank's slices to build again even where their rows did not change: "
            "`mirror_change_sensor` names those the catalog's audit found drifted."
        ),
    )


def build_rank_slices_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "rank_slices"),
        deps=slice_inputs(name),
        partitions_def=RANK_PARTITIONS,
        group_name=published_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        code_version=RANK_SLICES_CODE_VERSION,
        description=(
            "Every value of a rank as its own slice (`family`: one slice per family; homonyms "
            "get a path key), published in one pass over the mirror. Each slice is exactly the "
            "slice of its own key, checked before its atomic publish, with a catalog row; "
            "after a resync only the values whose rows changed are rebuilt."
        ),
    )
    @in_words
    def rank_slices(
        context: dg.AssetExecutionContext,
        config: RankRunConfig,
        hub: HubResource,
        storage: StorageResource,
        steps: StepsResource,
    ) -> dg.MaterializeResult:
        return _publish_rank(context, config, hub, storage.layout, name, steps.rank_workers)

    return rank_slices


def _publish_rank(
    context: dg.AssetExecutionContext,
    config: RankRunConfig,
    hub: HubResource,
    layout: Layout,
    name: str,
    workers: int,
) -> dg.MaterializeResult:
    """Plan the partition's rank from one pinned generation, publish its changed values (over
    `workers` processes)."""
    rank = context.partition_key
    if config.min_rows is not None and config.min_rows < 1:  # the launchpad takes any Int
        raise SettingsError(
            f"run config min_rows: {config.min_rows}: give a whole number >= 1 (1 publishes "
            "every value), or leave it empty for the rank's last setting"
        )
    min_rows = config.min_rows or records.published_ranks(layout, name).get(rank, 1)
    with generations.pin_generation(layout, name) as pin:
        files = pin.mirror_files()
        for output in ("taxon_index", "summaries"):
            built = built_from.load_built_from(layout, name, output)
            if built is None or built.files != pin.files:
                raise StoreError(
                    f"{name}: the {output} do not describe generation {pin.name}; materialize "
                    f"the derived tables first (tol/{name}/taxon_index, tol/{name}/summary/*)"
                )
        plan = plan_rank(
            rank,
            taxon_index.read_taxon_index(layout, name),
            summaries.read_summary(layout, name, "lineage"),
            files,
            min_rows,
        )
        context.log.info(
            f"{rank}: {len(plan.values):,} slices to check (min_rows {min_rows}), "
            f"{len(config.rebuild):,} to build again whatever their records say"
        )
        if plan.unnamed_rows:
            progress.told(context.log.warning)(unnamed_warning(plan))
        result = publish_rank(
            plan, files, schema=built_from.pinned_schema(layout, pin), layout=layout,
            config=name, commit=pin.commit, generation=pin.name,
            keep=set(slice_partition_keys(context.instance, name)),
            rebuild=frozenset(config.rebuild), workers=workers,
        )  # fmt: skip
    records.save_rank_state(layout, name, rank, min_rows)
    return dg.MaterializeResult(
        metadata={
            **rank_metadata(plan, result),
            "slices_dir": dg.MetadataValue.path(str(layout.slices_dir(name))),
            "upstream_commit": commit_url(hub.endpoint, hub.repo_id, pin.commit),
        }
    )


def unnamed_warning(plan: RankPlan) -> str:
    """What a person should know of the rows of `plan`'s rank that no key can name."""
    shown = ", ".join(repr(v) for v in plan.unnamed_values[:UNNAMED_SHOWN])
    more = len(plan.unnamed_values) - UNNAMED_SHOWN
    values = f" ({shown}{f' and {more:,} more' if more > 0 else ''})" if shown else ""
    epithets = ""
    if plan.rank == "species":
        epithets = ", or an epithet whose genus is missing, empty or holds a space"
    return (
        f"{plan.rank}: {plan.unnamed_rows:,} rows are in no slice: their value is blank or "
        f"holds a control character{values}{epithets}, which no slice key can name; they "
        "stay in the mirror and its summaries (upstream's data, to be corrected there)"
    )


def rank_metadata(plan: RankPlan, result: RankResult) -> dict[str, Any]:
    """What a pass did, for the UI: counts, the slices it rebuilt (the largest) and some it
    removed (a pass may rebuild or remove hundreds of thousands: the metadata stays small)."""
    built = heapq.nlargest(PREVIEW_ROWS, result.built, key=lambda r: r.rows)
    preview = pa.table(
        {
            "name": [r.key for r in built],
            "rows": pa.array([r.rows for r in built], pa.int64()),
            "size": [human_size(r.bytes) for r in built],
            "seconds": [round(r.seconds, 3) for r in built],
        }
    )
    return {
        "slices": dg.MetadataValue.int(len(plan.values)),
        "rebuilt": dg.MetadataValue.int(len(result.built)),
        "unchanged": dg.MetadataValue.int(len(result.unchanged)),
        "removed": dg.MetadataValue.int(len(result.removed)),
        "removed_slices": dg.MetadataValue.json(result.removed[:REMOVED_SHOWN]),
        "below_min_rows": dg.MetadataValue.int(plan.below_min_rows),
        "min_rows": dg.MetadataValue.int(plan.min_rows),
        "unplaced_rows": dg.MetadataValue.int(plan.unplaced_rows),
        "unnamed_rows": dg.MetadataValue.int(plan.unnamed_rows),
        "dagster/row_count": dg.MetadataValue.int(sum(result.built.rows)),
        **with_size("bytes_written", sum(result.built.bytes)),
        "seconds": round(result.seconds, 3),
        "rebuilt_slices": table_preview(preview),
    }

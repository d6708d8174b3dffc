"""`mirror_change_sensor`: after a new mirror generation, rebuild exactly the slices it touched.

Dagster cannot infer which slice partitions depend on which mirror files (the mapping is in
the data), so this sensor reads it from the taxon index: once the automation rebuilt the
derived tables for the published generation (`automation`), it diffs the index before and
after and requests only the slices whose taxa have rows in changed files, plus declared slices
never built (`refresh.plan_slice_refresh`). Slices declared in the slices file become
partitions here. Whole ranks (declared in the slices file's `ranks:`, or published before) get
one `rank_slices` run each per generation, which rebuilds only their values whose rows changed;
a rank newly declared gets its run at once. The catalog follows the slices by automation. The
slices the catalog's audit (`slices_match_catalog`) last found drifted are rebuilt, once per
evaluation of it (a partition by its run, a rank pass's slices by a run of their rank naming
them), and so are the derived tables when the audit of one of them
(`bytes_as_published`) last found it drifted.

Each request stays in the cursor (`pending`, by base run key) until its run succeeded: a run
that failed for good is requested again on a later tick under its next attempt's run key (see
`attempts`), up to `attempts.MAX_ATTEMPTS`; sensor-launched runs also carry Dagster's run retry
tags.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from tol_dagster.defs.attempts import RUN_RETRY_TAGS, next_attempt
from tol_dagster.defs.cursors import read_cursor
from tol_dagster.defs.keys import source_tags
from tol_dagster.defs.orphaned_runs import fail_dead_runs
from tol_dagster.defs.published import refresh
from tol_dagster.defs.published.automation import AUTOMATION_SENSOR
from tol_dagster.defs.published.jobs import DERIVED_JOB, rank_slices_job_name, slices_job_name
from tol_dagster.defs.published.keys import derived_keys, rank_slices_op_name
from tol_dagster.defs.published.partitions import slice_partition_keys, slice_partitions
from tol_dagster.defs.published.slices_audit import drifted_slices
from tol_dagster.defs.published.tables_audit import drifted_tables
from tol_dagster.defs.resources import StorageResource
from tol_dagster.errors import TolError
from tol_dagster.slices.rank_pass import by_rank_pass
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest


def build_mirror_change_sensor(
    configs: Sequence[str], slices_file: Path, jobs: "Sequence[dg.UnresolvedAssetJobDefinition]"
) -> dg.SensorDefinition:
    """`jobs`: the per-config slices and rank jobs (one job per partitions definition) and the
    derived tables' job."""

    @dg.sensor(
        name="mirror_change_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "After a new mirror generation, once its derived tables are built: only the slices "
            "whose taxa have rows in changed files, and declared slices never built. Rebuilds "
            "the slices and derived tables the audits found drifted."
        ),
        jobs=jobs,
    )
    def mirror_change_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource
    ) -> dg.SensorResult:
        requests: list[dg.RunRequest] = []
        partition_requests: list[dg.AddDynamicPartitionsRequest] = []
        why: list[str] = []
        cursor = read_cursor(context, _is_cursor)
        fail_dead_runs(context.instance)  # on by default: it frees what a dead run held
        for config in configs:
            try:
                tick = _evaluate(
                    context, storage.layout, config, slices_file, cursor.get(config, {})
                )
            except TolError as error:
                context.log.warning(f"{config}: {error}")
                why.append(f"{config}: {error}")
                continue
            requests += tick.requests
            if tick.add:
                partition_requests.append(slice_partitions(config).build_add_request(tick.add))
            cursor[config] = tick.state
            why.append(f"{config}: {tick.why}")
        idle = not requests and not partition_requests
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            skip_reason="; ".join(why) if idle else None,
            cursor=json.dumps(cursor),
        )

    return mirror_change_sensor


def _is_cursor(cursor: dict[str, Any]) -> bool:
    """Whether `cursor` is what this sensor writes: per config, {"slices_generation": str,
    "pending": {base run key: {"job": str, ...}}, "ranks": [rank, ...], "repaired": the id of
    the audit evaluation whose drifted slices were asked for, or None, "tables_repaired": the
    same of the derived tables' audit}."""
    return all(
        isinstance(state, dict)
        and isinstance(state.get("pending", {}), dict)
        and all(isinstance(s, dict) and "job" in s for s in state.get("pending", {}).values())
        and isinstance(state.get("ranks", []), list)
        for state in cursor.values()
    )


@dataclass(frozen=True)
class _ConfigTick:
    """What one tick does for one config: runs to request, partitions to add, its cursor."""

    requests: list[dg.RunRequest]
    add: list[str]
    state: dict
    #: Why nothing more is asked, in words (the tick's skip reason when no config asks anything).
    why: str


def _evaluate(
    context: dg.SensorEvaluationContext,
    layout: Layout,
    config: str,
    slices_file: Path,
    state: dict,
) -> _ConfigTick:
    built = refresh.current_derived(layout, config)
    if built is None:
        manifest = load_manifest(layout, config)
        if manifest is None:
            return _ConfigTick([], [], state, "no mirror yet (run a resync)")
        waiting = (
            f"waiting for the derived tables of generation {manifest.generation} "
            f"({AUTOMATION_SENSOR} builds them)"
        )
        context.log.info(f"{config}: {waiting}")
        return _ConfigTick([], [], state, waiting)
    add = refresh.declared_to_add(context.instance, config, slices_file)
    # Only slice requests: an older version of this sensor also kept derived and catalog
    # requests here, which the automation makes now.
    pending = {k: v for k, v in state.get("pending", {}).items() if "partition" in v}
    generation = state.get("slices_generation")
    ranks = refresh.ranks_to_refresh(layout, config, slices_file)
    new_ranks = {r: n for r, n in ranks.items() if r not in state.get("ranks", [])}
    if generation != built.generation or add:
        plan = refresh.plan_slice_refresh(context.instance, layout, config, slices_file, built)
        context.log.info(plan.describe(config))
        for key in plan.rebuild:
            pending[f"{config}:slice:{key}:{built.generation}"] = {
                "job": slices_job_name(config),
                "partition": key,
            }
    for rank, min_rows in (ranks if generation != built.generation else new_ranks).items():
        pending[f"{config}:rank:{rank}:{built.generation}"] = {
            "job": rank_slices_job_name(config),
            "partition": rank,
            "run_config": {
                "ops": {rank_slices_op_name(config): {"config": {"min_rows": min_rows}}}
            },
        }
    repairs = _repairs(context.instance, layout, config, state.get("repaired"))
    tables = _table_repairs(context.instance, config, state.get("tables_repaired"))
    pending.update(repairs.pending | tables.pending)
    generation = built.generation
    requests, pending = _attempts(context, pending)
    why = (
        f"{len(pending)} slice and rank runs of generation {generation} not finished yet"
        if pending
        else f"slices up to date with generation {generation}"
    )
    state = {
        "slices_generation": generation,
        "pending": pending,
        "ranks": sorted(ranks),
        "repaired": repairs.evaluation_id,
        "tables_repaired": tables.evaluation_id,
    }
    return _ConfigTick(requests, add, state, why)


@dataclass(frozen=True)
class _Repairs:
    """Rebuilds of drifted slices to add to `pending`, and the audit evaluation they answer."""

    pending: dict[str, dict]
    evaluation_id: int | None


def _repairs(
    instance: dg.DagsterInstance, layout: Layout, config: str, repaired: object
) -> _Repairs:
    """A rebuild of each slice the latest `slices_match_catalog` found drifted, asked once per
    evaluation (`repaired`: the one already answered): its partition's run, or for a slice a
    rank pass made, one run of that rank naming it (`_rank_repairs`)."""
    named = drifted_slices(instance, config)
    if named is None or named.evaluation_id == repaired:
        return _Repairs({}, repaired if isinstance(repaired, int) else None)
    partitions = set(slice_partition_keys(instance, config)) if named.names else set()
    pending = {
        f"{config}:repair:{key}:{named.evaluation_id}": {
            "job": slices_job_name(config),
            "partition": key,
        }
        for key in named.names
        if key in partitions
    }
    others = [name for name in named.names if name not in partitions]
    pending |= _rank_repairs(layout, config, others, named.evaluation_id)
    return _Repairs(pending, named.evaluation_id)


def _rank_repairs(
    layout: Layout, config: str, names: Sequence[str], evaluation_id: int
) -> dict[str, dict]:
    """One run of each rank whose pass made some of `names` (`by_rank_pass`), building those
    again (`RankRunConfig.rebuild`: a drifted slice's record still matches its rows). A name
    without a record (a damaged one, or no longer a key) is left to the command the check names."""
    op = rank_slices_op_name(config)
    return {
        f"{config}:repair-rank:{rank}:{evaluation_id}": {
            "job": rank_slices_job_name(config),
            "partition": rank,
            "run_config": {"ops": {op: {"config": {"rebuild": sorted(found)}}}},
        }
        for rank, found in by_rank_pass(layout, config, names).items()
    }


def _table_repairs(instance: dg.DagsterInstance, config: str, repaired: object) -> _Repairs:
    """A build of the derived tables of `config` when the latest audit of one of them found
    drift, asked once per evaluation (`repaired`: the newest one answered). Incremental: the
    build writes each table anew from its per-file parts, and its own check then passes."""
    newest = max(drifted_tables(instance, config).values(), default=None)
    if newest is None or newest == repaired:
        return _Repairs({}, repaired if isinstance(repaired, int) else None)
    spec = {
        "job": DERIVED_JOB,
        "partition": None,
        "assets": [key.to_user_string() for key in derived_keys(config)],
    }
    return _Repairs({f"{config}:repair-derived:{newest}": spec}, newest)


def _attempts(
    context: dg.SensorEvaluationContext, pending: dict[str, dict]
) -> tuple[list[dg.RunRequest], dict[str, dict]]:
    """Requests for the pending runs still to launch or to retry; drops those that succeeded
    or failed `MAX_ATTEMPTS` times (logged)."""
    requests: list[dg.RunRequest] = []
    still: dict[str, dict] = {}
    for base, spec in pending.items():
        attempt = next_attempt(context.instance, base)
        if attempt.settled:
            if attempt.state == "gave up":
                context.log.warning(attempt.describe(base))
            continue
        still[base] = spec
        if attempt.run_key is None:
            continue
        requests.append(
            dg.RunRequest(
                run_key=attempt.run_key,
                job_name=spec["job"],
                partition_key=spec["partition"],
                asset_selection=[dg.AssetKey.from_user_string(a) for a in spec["assets"]]
                if "assets" in spec
                else None,
                run_config=spec.get("run_config", {}),
                tags={**RUN_RETRY_TAGS, **source_tags("sensor")},
            )
        )
    return requests, still

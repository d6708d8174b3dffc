"""`mirror_change_sensor`: after a published resync, rebuild exactly what it affected.

Dagster cannot infer which slice partitions depend on which mirror files (the mapping is in
the data), so this sensor reads it from the taxon index: first it requests the summaries,
index and centroids for the new mirror generation (incremental: only changed files are
scanned); once the index is rebuilt, it diffs the index before and after and requests only
the slices whose taxa have rows in changed files (plus declared slices never built); then it
refreshes the catalog. Slices declared in the slices file become partitions here.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from tol_dagster import published
from tol_dagster.defs.jobs import CATALOG_JOB, DERIVED_JOB, slices_job_name
from tol_dagster.defs.keys import asset_key, derived_keys, slices_partitions_name
from tol_dagster.defs.resources import StorageResource
from tol_dagster.errors import TolError
from tol_dagster.manifest import load_manifest


def build_mirror_change_sensor(
    configs: Sequence[str], slices_file: Path, jobs: "Sequence[dg.UnresolvedAssetJobDefinition]"
) -> dg.SensorDefinition:
    """`jobs`: the derived, catalog and per-config slices jobs (one job per partitions definition)."""

    @dg.sensor(
        name="mirror_change_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a published resync: summaries and index, then only the affected slices, then the catalog.",
        jobs=jobs,
    )
    def mirror_change_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource
    ) -> dg.SensorResult:
        requests: list[dg.RunRequest] = []
        partition_requests: list[dg.AddDynamicPartitionsRequest] = []
        cursor = json.loads(context.cursor) if context.cursor else {}
        for config in configs:
            try:
                config_requests, add, state = _evaluate(
                    context, storage, config, slices_file, cursor.get(config, {})
                )
            except TolError as error:
                context.log.warning(f"{config}: {error}")
                continue
            requests += config_requests
            if add:
                partition_requests.append(
                    dg.AddDynamicPartitionsRequest(slices_partitions_name(config), add)
                )
            cursor[config] = state
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps(cursor),
        )

    return mirror_change_sensor


def _evaluate(
    context: dg.SensorEvaluationContext,
    storage: StorageResource,
    config: str,
    slices_file: Path,
    state: dict,
) -> tuple[list[dg.RunRequest], list[str], dict]:
    layout = storage.layout
    manifest = load_manifest(layout, config)
    if manifest is None:
        return [], [], state
    generation = manifest.generation
    built = published.load_built_from(layout, config, "taxon_index")
    if built is None or built.generation != generation:
        context.log.info(
            f"{config}: mirror generation {generation} is new; rebuilding summaries, index, centroids"
        )
        return (
            [
                dg.RunRequest(
                    run_key=f"{config}:derived:{generation}",
                    job_name=DERIVED_JOB,
                    asset_selection=derived_keys(config),
                )
            ],
            [],
            state,
        )

    partitions_name = slices_partitions_name(config)
    existing = set(context.instance.get_dynamic_partitions(partitions_name))
    declared = published.declared_slices(slices_file, config)
    add = [key for key in declared if key not in existing]
    keys = sorted(existing | set(declared))
    requests: list[dg.RunRequest] = []
    if state.get("slices_generation") != generation or add:
        todo, changed = published.slices_to_rebuild(layout, config, keys, built)
        context.log.info(
            f"{config}: {len(changed)} files changed; rebuilding {len(todo)} of {len(keys)} slices"
        )
        requests += [
            dg.RunRequest(
                run_key=f"{config}:slice:{key}:{generation}",
                job_name=slices_job_name(config),
                partition_key=key,
            )
            for key in todo
        ]
        state = {**state, "slices_generation": generation}
    records_now = published.slice_records(layout, config)
    # The whole record, not only its sha256: a slice rebuilt with the same bytes (a resync that
    # touched its file but not its rows) still has a new upstream_commit and built_at.
    fingerprint = hashlib.sha256(
        json.dumps(
            sorted(
                json.dumps(r, sort_keys=True)
                for r in records_now
                if r["name"] in existing | set(add)
            )
        ).encode()
        + json.dumps(sorted(existing)).encode()
    ).hexdigest()[:16]
    if records_now and fingerprint != state.get("catalog"):
        requests.append(
            dg.RunRequest(
                run_key=f"{config}:catalog:{fingerprint}",
                job_name=CATALOG_JOB,
                asset_selection=[asset_key(config, "catalog")],
            )
        )
        state = {**state, "catalog": fingerprint}
    return requests, add, state

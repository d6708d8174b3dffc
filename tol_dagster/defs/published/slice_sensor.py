"""`mirror_change_sensor`: after a published resync, rebuild exactly what it affected.

Dagster cannot infer which slice partitions depend on which mirror files (the mapping is in
the data), so this sensor reads it from the taxon index: first it requests the summaries,
index and centroids for the new mirror generation (incremental: only changed files are
scanned); once the index is rebuilt, it diffs the index before and after and requests only
the slices whose taxa have rows in changed files (plus declared slices never built); then it
refreshes the catalog. Slices declared in the slices file become partitions here.

Each request stays in the cursor (`pending`, by base run key) until its run succeeded: a run
that failed for good is requested again on a later tick under its next attempt's run key (see
`attempts`), up to `attempts.MAX_ATTEMPTS`; sensor-launched runs also carry Dagster's run retry
tags. The derived request needs no entry: it is re-evaluated every tick until the index is built.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from tol_dagster.defs.attempts import RUN_RETRY_TAGS, next_attempt
from tol_dagster.defs.jobs import CATALOG_JOB, DERIVED_JOB, slices_job_name
from tol_dagster.defs.keys import asset_key, derived_keys, slices_partitions_name
from tol_dagster.defs.resources import StorageResource
from tol_dagster.errors import TolError
from tol_dagster.slices import builds as published
from tol_dagster.store.manifest import load_manifest


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
        attempt = next_attempt(context.instance, f"{config}:derived:{generation}")
        if attempt.run_key is None:
            context.log.info(attempt.describe(f"{config}: derived outputs of {generation}"))
            return [], [], state
        return (
            [
                dg.RunRequest(
                    run_key=attempt.run_key,
                    job_name=DERIVED_JOB,
                    asset_selection=derived_keys(config),
                    tags=RUN_RETRY_TAGS,
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
    pending: dict[str, dict] = dict(state.get("pending", {}))
    if state.get("slices_generation") != generation or add:
        todo, changed = published.slices_to_rebuild(layout, config, keys, built)
        context.log.info(
            f"{config}: {len(changed)} files changed; rebuilding {len(todo)} of {len(keys)} slices"
        )
        for key in todo:
            pending[f"{config}:slice:{key}:{generation}"] = {
                "job": slices_job_name(config),
                "partition": key,
            }
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
        catalog_prefix = f"{config}:catalog:"
        pending = {k: v for k, v in pending.items() if not k.startswith(catalog_prefix)}
        pending[f"{catalog_prefix}{fingerprint}"] = {
            "job": CATALOG_JOB,
            "assets": [asset_key(config, "catalog").to_user_string()],
        }
        state = {**state, "catalog": fingerprint}
    requests, pending = _attempts(context, pending)
    return requests, add, {**state, "pending": pending}


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
        assets = spec.get("assets")
        requests.append(
            dg.RunRequest(
                run_key=attempt.run_key,
                job_name=spec["job"],
                partition_key=spec.get("partition"),
                asset_selection=[dg.AssetKey.from_user_string(a) for a in assets]
                if assets
                else None,
                tags=RUN_RETRY_TAGS,
            )
        )
    return requests, still

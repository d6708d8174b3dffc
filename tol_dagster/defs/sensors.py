"""`upstream_change_sensor`: notices upstream changes the Hub cannot push to us.

One cheap request per tick while nothing changed (the repo's head commit). On a new commit,
one tree listing per config and a diff by sha256 against the manifest: a run is requested only
for configs whose files or card count changed, pinned to that commit, with a run key that
includes the commit so a real change is never dropped as a duplicate.
"""

import json
from collections.abc import Sequence

import dagster as dg

from tol_dagster import sync
from tol_dagster.defs.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.keys import resync_check_keys, resync_keys, staged_op_name
from tol_dagster.defs.resources import HubResource, StorageResource
from tol_dagster.errors import UpstreamError
from tol_dagster.hub import RetryPolicy
from tol_dagster.runs import fail_dead_cli_runs

#: A tick stays short: one quick retry, then the next tick tries again. The default policy
#: (6 attempts, backoff to 30 s) held a tick for 31 s against a Hub that was down, and longer
#: than the daemon's tick timeout against one that hangs.
#: A 429 likewise: one short wait at most, whatever the server asks.
SENSOR_RETRY = RetryPolicy(
    attempts=2,
    base_delay_s=0.5,
    max_delay_s=0.5,
    timeout_s=10.0,
    max_server_wait_s=5.0,
    rate_limit_attempts=2,
)


def build_upstream_change_sensor(
    configs: Sequence[str], min_interval_s: int
) -> dg.SensorDefinition:
    @dg.sensor(
        name="upstream_change_sensor",
        job_name=RESYNC_JOB,
        minimum_interval_seconds=min_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Polls the Hub's head commit; requests a resync of exactly what changed.",
    )
    def upstream_change_sensor(
        context: dg.SensorEvaluationContext, hub: HubResource, storage: StorageResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {}
        for config in configs:
            fail_dead_cli_runs(context.instance, config)
        client = hub.client(retry=SENSOR_RETRY)
        try:
            head = client.head_commit()
        except UpstreamError as error:
            context.log.warning(f"Hub unreachable, will retry on a later tick: {error}")
            return dg.SkipReason(f"Hub unreachable: {error}")
        if cursor.get("commit") == head:
            return dg.SkipReason(f"upstream unchanged at {head[:12]}")

        requests = []
        for config in configs:
            try:
                remote = client.remote_config(config, commit=head)
            except UpstreamError as error:
                context.log.warning(
                    f"{config}: listing failed, will retry on a later tick: {error}"
                )
                return dg.SkipReason(f"{config}: listing failed: {error}")
            decision = sync.decide(storage.layout, remote)
            context.log.info(f"{config} @ {head[:12]}: {decision.reason}")
            if not decision.needs_run:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{config}@{head}:{sync.remote_version(remote)}",
                    asset_selection=resync_keys(config),
                    asset_check_keys=resync_check_keys(config),
                    run_config={"ops": {staged_op_name(config): {"config": {"commit": head}}}},
                    tags={**resync_run_tags(config, head), "tol/plan": decision.reason[:200]},
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps({"commit": head}))

    return upstream_change_sensor

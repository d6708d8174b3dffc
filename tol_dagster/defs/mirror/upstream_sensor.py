"""`upstream_change_sensor`: notices upstream changes the Hub cannot push to us.

One cheap request per tick while nothing changed (the repo's head commit). On a new commit,
one tree listing per config and a diff by sha256 against the manifest: a run is requested only
for configs whose files or card count changed, pinned to that commit, with a run key that
includes the commit so a real change is never dropped as a duplicate.

The cursor advances to a commit only once every resync requested for it succeeded: until then
it keeps `pending` (the commit, and per config the run key and plan), and each tick looks the
runs up: a failure is requested again under a new run key (`...:attempt-N`, see `attempts`)
once `TOL_SENSOR_RETRY_DELAY_S` passed (4× that before the third), a run in progress or a
delay not yet passed makes the tick skip with the reason. A newer upstream commit replaces the
pending one (its resync syncs the newest state anyway).
"""

import json
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from tol_dagster.defs.attempts import RUN_RETRY_TAGS, next_attempt
from tol_dagster.defs.cursors import read_cursor
from tol_dagster.defs.keys import asset_key, source_tags
from tol_dagster.defs.mirror.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.defs.orphaned_runs import fail_dead_runs
from tol_dagster.defs.resources import HubResource, StorageResource
from tol_dagster.errors import UpstreamError
from tol_dagster.hub.client import HubClient
from tol_dagster.hub.retry import QUICK_RETRY
from tol_dagster.resync.plan import decide
from tol_dagster.resync.state import remote_version
from tol_dagster.store.layout import Layout


def build_upstream_change_sensor(
    configs: Sequence[str], min_interval_s: int, freshness_days: int = 7, retry_delay_s: int = 0
) -> dg.SensorDefinition:
    """`freshness_days`: the mirror's freshness window; an unchanged upstream is confirmed by a
    resync (no download) once half of it passed since the mirror's last publish.
    `retry_delay_s`: how long a failed resync's next attempt waits (`attempts`)."""

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
        cursor = read_cursor(context, _is_cursor)
        ensure_resync_pools(context.instance, configs)
        fail_dead_runs(context.instance)
        client = hub.client(retry=QUICK_RETRY)  # a tick stays short: the next one asks again
        try:
            head = client.head_commit()
        except UpstreamError as error:
            context.log.warning(f"Hub unreachable, will retry on a later tick: {error}")
            return dg.SkipReason(f"Hub unreachable: {error}")
        pending = cursor.get("pending")
        if pending and pending.get("commit") == head:
            return _follow_up(context, cursor, pending, retry_delay_s)
        if not pending and cursor.get("commit") == head:
            confirm = _confirmations(context, configs, head, freshness_days)
            if confirm:
                return dg.SensorResult(run_requests=confirm, cursor=context.cursor)
            return dg.SkipReason(f"upstream unchanged at {head[:10]}")

        return _new_commit(context, client, storage.layout, configs, head, cursor.get("commit"))

    return upstream_change_sensor


def _is_cursor(cursor: dict[str, Any]) -> bool:
    """Whether `cursor` is what this sensor writes: {"commit": str or null, "pending": {"commit":
    str, "configs": {config: {"run_key": str, "plan": str}}}} (`pending` while runs are out)."""
    pending = cursor.get("pending")
    if not isinstance(cursor.get("commit"), str | None):
        return False
    if pending is None:
        return True
    if not isinstance(pending, dict):
        return False
    plans = pending.get("configs")
    return (
        isinstance(pending.get("commit"), str)
        and isinstance(plans, dict)
        and all(
            isinstance(plan, dict) and isinstance(plan.get("run_key"), str) and "plan" in plan
            for plan in plans.values()
        )
    )


def _new_commit(
    context: dg.SensorEvaluationContext,
    client: HubClient,
    layout: Layout,
    configs: Sequence[str],
    head: str,
    done: str | None,
) -> dg.SensorResult | dg.SkipReason:
    """A new head commit: a resync of each config whose files or card count changed at it,
    pending in the cursor until it succeeded; or, if none changed, why not."""
    requests = []
    plans: dict[str, dict[str, str]] = {}
    in_sync: list[str] = []
    for config in configs:
        try:
            remote = client.remote_config(config, commit=head)
        except UpstreamError as error:
            context.log.warning(f"{config}: listing failed, will retry on a later tick: {error}")
            return dg.SkipReason(f"{config}: listing failed: {error}")
        decision = decide(layout, remote)
        context.log.info(f"{config} @ {head[:12]}: {decision.reason}")
        if not decision.needs_run:
            in_sync.append(f"{config}: {decision.reason}")
            continue
        base = f"{config}@{head}:{remote_version(remote)}"
        plans[config] = {"run_key": base, "plan": decision.reason[:200]}
        requests.append(_resync_request(config, head, base, decision.reason[:200]))
    if not requests:
        return dg.SensorResult(
            skip_reason=f"upstream at {head[:10]}, nothing to fetch: " + "; ".join(in_sync),
            cursor=json.dumps({"commit": head}),
        )
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps({"commit": done, "pending": {"commit": head, "configs": plans}}),
    )


def _resync_request(config: str, head: str, run_key: str, plan: str) -> dg.RunRequest:
    """A resync of `config` pinned to `head`; Dagster retries it once if it fails."""
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=resync_keys(config),
        asset_check_keys=resync_check_keys(config),
        run_config=resync_run_config(config, commit=head),
        tags={
            **resync_run_tags(config, head),
            **RUN_RETRY_TAGS,
            **source_tags("sensor"),
            "tol/plan": plan,
        },
    )


def _confirmations(
    context: dg.SensorEvaluationContext, configs: Sequence[str], head: str, freshness_days: int
) -> list[dg.RunRequest]:
    """Resyncs that confirm an unchanged upstream (nothing to fetch: the gate on cached facts,
    no publish) for configs whose mirror was last materialized over half the freshness window
    ago, so `mirror` shows stale only when it could not be confirmed current."""
    half = freshness_days * 86400 / 2
    now = time.time()
    requests = []
    for config in configs:
        event = context.instance.get_latest_materialization_event(asset_key(config, "mirror"))
        if event is None or now - event.timestamp < half:
            continue
        window = int(now // half)
        key = f"{config}@{head}:confirm-{window}"
        requests.append(_resync_request(config, head, key, "confirm upstream unchanged"))
    return requests


def _follow_up(
    context: dg.SensorEvaluationContext, cursor: dict, pending: dict, delay_s: int
) -> dg.SensorResult:
    """The resyncs requested for the head commit: advance the cursor once all succeeded,
    request a failed one again under its next attempt's run key once its delay passed
    (`attempts`), else say what is waited for."""
    head: str = pending["commit"]
    requests, waiting = [], []
    for config, plan in pending["configs"].items():
        attempt = next_attempt(context.instance, plan["run_key"], delay_s=delay_s)
        if attempt.state == "succeeded":
            continue
        what = f"resync of {config} @ {head[:12]}"
        context.log.info(attempt.describe(what))
        if attempt.run_key is not None:
            requests.append(_resync_request(config, head, attempt.run_key, plan["plan"]))
        else:
            waiting.append(attempt.describe(what))
    if requests or waiting:  # the cursor stays; a config that gave up waits for a newer commit
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else "; ".join(waiting),
            cursor=json.dumps(cursor),
        )
    return dg.SensorResult(
        skip_reason=f"resync of {head[:12]} succeeded", cursor=json.dumps({"commit": head})
    )

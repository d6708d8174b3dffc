"""Sensor requests that are retried until they succeed, without duplicates.

A sensor's run key makes a request idempotent, which also means a failed run is never
requested again under the same key. So each request has a base key and numbered attempts
(`<base>`, `<base>:attempt-2`, ...): the next tick looks up the newest run of each attempt
(retries launched by the daemon keep the run key tag) and asks again, under the next attempt's
key, only when the last one failed for good. Failures the daemon is about to retry (run
retries, `dagster/max_retries` on every sensor-launched run) count as in progress.

A sensor may ask to back off: attempt N+1 then waits `delay_s × 4^(N-1)` after attempt N
ended, so a cause that lasts a while (the Hub's file servers down while it answers the sensor's
cheap request) does not use up every attempt within a few ticks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import dagster as dg

#: Attempts a sensor makes for one request (each may be retried by the daemon as well).
MAX_ATTEMPTS = 3
#: Dagster's own run retries for sensor-launched runs (needs `run_retries: enabled` in the
#: instance's dagster.yaml; the instance default stays 0, so command-line runs are not retried).
RUN_RETRY_TAGS = {"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"}
#: For the runs the automation launches (`published.automation`): no sensor asks again after
#: they failed, so the daemon retries one until MAX_ATTEMPTS runs in all have failed; then the
#: assets wait for the next mirror generation (or a Materialize in the UI).
AUTOMATION_RUN_TAGS = {**RUN_RETRY_TAGS, "dagster/max_retries": str(MAX_ATTEMPTS - 1)}

RUN_KEY_TAG = "dagster/run_key"
WILL_RETRY_TAG = "dagster/will_retry"
_FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class Attempt:
    """What a sensor should do about one request now.

    `run_key` is set when a run should be requested (the first attempt, a run that was never
    launched, or a retry after a failure); `state` says why in words for the tick's log.
    """

    state: str  # "new" | "retry" | "in progress" | "backing off" | "succeeded" | "gave up"
    number: int
    run_key: str | None = None
    run_id: str | None = None
    #: While backing off: seconds until the next attempt may be requested.
    wait_s: float = 0.0

    @property
    def settled(self) -> bool:
        return self.state in ("succeeded", "gave up")

    def describe(self, what: str) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        if self.state == "gave up":
            return f"{what}: failed {self.number} times{run}; not requested again until it changes"
        if self.state == "backing off":
            then = f"attempt {self.number + 1} in {math.ceil(self.wait_s / 60)} min"
            return f"{what}: attempt {self.number} failed{run}; {then}"
        return f"{what}: attempt {self.number} {self.state}{run}"


def attempt_key(base: str, number: int) -> str:
    return base if number == 1 else f"{base}:attempt-{number}"


def latest_run(instance: dg.DagsterInstance, run_key: str) -> dg.RunRecord | None:
    """The newest run launched under `run_key` (a daemon retry of a run keeps its run key)."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return records[0] if records else None


def next_attempt(
    instance: dg.DagsterInstance, base: str, max_attempts: int = MAX_ATTEMPTS, delay_s: float = 0
) -> Attempt:
    """The state of the request `base`, from its runs' statuses, and the key to ask with
    (backing off by `delay_s`, see the module)."""
    record: dg.RunRecord | None = None
    for number in range(1, max_attempts + 1):
        key = attempt_key(base, number)
        record = latest_run(instance, key)
        if record is None:
            return Attempt("new" if number == 1 else "retry", number, run_key=key)
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return Attempt("succeeded", number, run_id=run.run_id)
        if run.status not in _FAILED or run.tags.get(WILL_RETRY_TAG) == "true":
            # Queued, running, or failed with a daemon retry on its way.
            return Attempt("in progress", number, run_id=run.run_id)
        wait_s = _ended(record) + delay_s * 4 ** (number - 1) - time.time()
        if number < max_attempts and wait_s > 0:
            return Attempt("backing off", number, run_id=run.run_id, wait_s=wait_s)
    run_id = record.dagster_run.run_id if record else None
    return Attempt("gave up", max_attempts, run_id=run_id)


def _ended(record: dg.RunRecord) -> float:
    """When the run ended (its last update where the run has no end recorded)."""
    return record.end_time or record.update_timestamp.timestamp()

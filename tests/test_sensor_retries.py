"""`mirror_change_sensor` requests a failed derived or slice run again on a later tick (under
its next attempt's run key): a run key alone would drop the retry as a duplicate for ever."""

from __future__ import annotations

import uuid

import dagster as dg
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user
from test_published import SENSOR_SLICES, SensorDriver, declared, kinds

__all__ = ["dagster_home", "declared", "synced", "synced_home", "user"]  # fixtures


def fail(user: User, request: dg.RunRequest) -> None:
    """The run the daemon launched for `request` failed (its retries, if any, too)."""
    with user.instance() as instance:
        instance.add_run(
            dg.DagsterRun(
                job_name=str(request.job_name),
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.FAILURE,
                tags={**request.tags, "dagster/run_key": str(request.run_key)},
            )
        )


def test_failed_derived_and_slice_runs_are_requested_again_on_a_later_tick(
    declared: User,
) -> None:
    sensor = SensorDriver(declared)
    [derive] = sensor.tick()
    assert kinds([derive]) == ["derived"]
    assert derive.tags["dagster/max_retries"] == "1", "Dagster retries the run once first"
    fail(declared, derive)

    [again] = sensor.tick()
    assert kinds([again]) == ["derived"]
    assert again.run_key == f"{derive.run_key}:attempt-2"
    sensor.run([again])

    slices = sensor.tick()
    assert kinds(slices) == sorted(SENSOR_SLICES)
    [broken] = [r for r in slices if r.partition_key == "family=Felidae"]
    fail(declared, broken)
    sensor.run([r for r in slices if r is not broken])

    retried = sensor.tick()
    assert kinds(retried) == sorted(["family=Felidae", "catalog"]), (
        "only the failed slice is asked again (and the catalog for the built ones)"
    )
    [retry] = [r for r in retried if r.partition_key == "family=Felidae"]
    assert retry.run_key == f"{broken.run_key}:attempt-2"
    sensor.run(retried)

    catalog = sensor.tick()
    assert kinds(catalog) == ["catalog"], "the catalog again, now with the retried slice"
    sensor.run(catalog)
    assert sensor.tick() == [], "nothing pending once every run succeeded"
    assert CONFIG in str(retry.run_key)

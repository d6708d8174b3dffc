"""`mirror_change_sensor` requests a failed slice run again on a later tick (under its next
attempt's run key): a run key alone would drop the retry as a duplicate for ever. The runs the
automation launches (derived tables, catalog) are retried by the daemon instead."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user
from test_published import SENSOR_SLICES, DaemonDriver, declared, kinds

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.attempts import MAX_ATTEMPTS
from tol_dagster.defs.published.automation import AUTOMATION_SENSOR
from tol_dagster.settings import Settings

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


def test_failed_slice_runs_are_requested_again_on_a_later_tick(declared: User) -> None:
    daemon = DaemonDriver(declared)
    [derive] = daemon.tick()
    assert kinds([derive]) == ["derived"]
    daemon.run([derive])

    slices = daemon.tick()
    assert kinds(slices) == sorted(SENSOR_SLICES)
    assert {r.tags["dagster/max_retries"] for r in slices} == {"1"}, "Dagster retries once first"
    [broken] = [r for r in slices if r.partition_key == "family=Felidae"]
    fail(declared, broken)
    daemon.run([r for r in slices if r is not broken])

    retried = daemon.tick()
    assert kinds(retried) == sorted(["family=Felidae", "catalog"]), (
        "only the failed slice is asked again (and the catalog for the built ones)"
    )
    [retry] = [r for r in retried if r.partition_key == "family=Felidae"]
    assert retry.run_key == f"{broken.run_key}:attempt-2"
    daemon.run(retried)

    catalog = daemon.tick()
    assert kinds(catalog) == ["catalog"], "the catalog again, now with the retried slice"
    daemon.run(catalog)
    assert daemon.tick() == [], "nothing pending once every run succeeded"
    assert CONFIG in str(retry.run_key)


def test_runs_the_automation_launches_are_retried_by_the_daemon(tmp_path: Path) -> None:
    """No sensor asks again for a derived or catalog run that failed: Dagster's run retries
    (`run_retries` in dagster.yaml) re-run it from the failure, up to MAX_ATTEMPTS runs."""
    defs = build_definitions(Settings.from_env({"TOL_HOME": str(tmp_path)}))

    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)

    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.run_tags["dagster/max_retries"] == str(MAX_ATTEMPTS - 1)
    assert sensor.run_tags["dagster/retry_strategy"] == "FROM_FAILURE"

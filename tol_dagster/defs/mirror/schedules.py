"""Schedules, switchable in the UI: the nightly resync off by default (the upstream sensor does
its work), the weekly full audit on."""

from collections.abc import Iterator, Sequence

import dagster as dg

from tol_dagster.defs.keys import source_tags
from tol_dagster.defs.mirror.jobs import AUDIT_JOB, RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys


def build_schedules(configs: Sequence[str]) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="nightly_resync_schedule",
        job_name=RESYNC_JOB,
        cron_schedule="0 3 * * *",
        description="For users who prefer fixed windows to the sensor: same job, same gate.",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def nightly_resync_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        stamp = (
            context.scheduled_execution_time.isoformat()
            if context.scheduled_execution_time
            else "manual"
        )
        for config in configs:
            yield dg.RunRequest(
                run_key=f"{config}@{stamp}",
                asset_selection=resync_keys(config),
                asset_check_keys=resync_check_keys(config),
                tags={**resync_run_tags(config, None), **source_tags("schedule")},
            )

    weekly_audit_schedule = dg.ScheduleDefinition(
        name="weekly_audit_schedule",
        job_name=AUDIT_JOB,
        cron_schedule="0 4 * * 0",
        description=(
            "Re-hash every file of the mirror against the manifest and upstream, every "
            "published slice against the catalog and every derived table against its build's "
            "record; the checks report drift. Running by default: a resync re-hashes only what "
            "it published."
        ),
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags=source_tags("schedule"),
    )
    return [nightly_resync_schedule, weekly_audit_schedule]

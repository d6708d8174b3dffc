"""The code location: every asset, check, job, sensor and schedule, wired to the resources.

Loaded by `dagster dev` / the daemon through workspace.yaml, and by the command line.
"""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.jobs import CATALOG_JOB, DERIVED_JOB, build_jobs, slices_job_name
from tol_dagster.defs.mirror_assets import build_mirror_assets
from tol_dagster.defs.published_assets import build_alignment_checks, build_published_assets
from tol_dagster.defs.resources import resources_from
from tol_dagster.defs.resync_slot import ResyncSlotResource
from tol_dagster.defs.schedules import build_schedules
from tol_dagster.defs.sensors import build_upstream_change_sensor
from tol_dagster.defs.slice_sensors import build_mirror_change_sensor
from tol_dagster.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """All definitions for `settings` (one set of assets per configured config)."""
    assets: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    for config in settings.configs:
        for definition in [*build_mirror_assets(config), *build_published_assets(config)]:
            if isinstance(definition, dg.AssetChecksDefinition):
                checks.append(definition)
            else:
                assets.append(definition)
    jobs = build_jobs(settings.configs)
    slices_jobs = {slices_job_name(config) for config in settings.configs}
    published_jobs = [
        job for job in jobs if job.name in (DERIVED_JOB, CATALOG_JOB) or job.name in slices_jobs
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[*checks, *build_alignment_checks(settings.configs)],
        jobs=jobs,
        sensors=[
            build_upstream_change_sensor(settings.configs, settings.sensor_min_interval_s),
            build_mirror_change_sensor(settings.configs, settings.slices_file, published_jobs),
        ],
        schedules=build_schedules(settings.configs),
        resources={
            **resources_from(settings),
            # Held for a whole run (a context manager), so kept out of `resources_from`, which
            # sensors and tests build contexts from.
            "resync_slot": ResyncSlotResource(
                home=str(settings.home), configs=list(settings.configs)
            ),
        },
        # The UI's Materialize launches Dagster's implicit asset job: in one process like every
        # job here, so a resync's lease spans its `staged` and `mirror` (tol_dagster.defs.resync_slot).
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as `dagster dev` and the daemon load it: the environment is read when
    the location loads, not when this module is imported (the command line imports it at start
    and must report a bad setting as exit 2, not crash on import)."""
    return build_definitions(Settings.from_env())

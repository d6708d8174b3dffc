"""The mirror domain's definitions: per config its assets and audit check; the resync, audit and
status jobs, the upstream sensor and the schedules over every config."""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.metadata import with_code_references
from tol_dagster.defs.mirror.assets import build_mirror_assets
from tol_dagster.defs.mirror.audit import build_audit_check
from tol_dagster.defs.mirror.jobs import build_mirror_jobs
from tol_dagster.defs.mirror.schedules import build_schedules
from tol_dagster.defs.mirror.upstream_sensor import build_upstream_change_sensor
from tol_dagster.settings import Settings


def build_mirror_definitions(settings: Settings) -> dg.Definitions:
    """The mirror's assets, checks, jobs, sensor and schedules for `settings.configs` (the
    resources they need are bound where the domains are merged: `tol_dagster.definitions`)."""
    configs = settings.configs
    assets = [
        asset
        for config in configs
        for asset in build_mirror_assets(config, settings.freshness_days)
    ]
    return dg.Definitions(
        assets=with_code_references(assets),
        asset_checks=[build_audit_check(config) for config in configs],
        jobs=build_mirror_jobs(configs),
        sensors=[
            build_upstream_change_sensor(
                configs,
                settings.sensor_min_interval_s,
                settings.freshness_days,
                settings.sensor_retry_delay_s,
            )
        ],
        schedules=build_schedules(configs),
    )

"""The published domain's definitions: per config its derived tables, slices, rank slices and
catalog, the catalog's and the derived tables' audit checks; the alignment checks between
configs; their jobs, `mirror_change_sensor` and the automation sensor."""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.metadata import with_code_references
from tol_dagster.defs.published.alignment_checks import build_alignment_checks
from tol_dagster.defs.published.automation import build_automation_sensor
from tol_dagster.defs.published.catalog_asset import build_catalog_asset
from tol_dagster.defs.published.derived_assets import build_derived_assets
from tol_dagster.defs.published.jobs import (
    DERIVED_JOB,
    build_published_jobs,
    build_rank_jobs,
    build_slices_jobs,
)
from tol_dagster.defs.published.rank_asset import build_rank_slices_asset
from tol_dagster.defs.published.slice_asset import build_slices_asset
from tol_dagster.defs.published.slice_sensor import build_mirror_change_sensor
from tol_dagster.defs.published.slices_audit import build_slices_audit_check
from tol_dagster.defs.published.tables_audit import build_tables_audit_check
from tol_dagster.settings import Settings


def build_published_assets(name: str) -> list[dg.AssetsDefinition]:
    """The published assets of config `name`: derived tables, slices, catalog."""
    return [
        *build_derived_assets(name),
        build_slices_asset(name),
        build_rank_slices_asset(name),
        build_catalog_asset(name),
    ]


def build_published_definitions(settings: Settings) -> dg.Definitions:
    """The published outputs' definitions for `settings.configs` (the resources they need are
    bound where the domains are merged: `tol_dagster.definitions`)."""
    configs = settings.configs
    assets = [asset for config in configs for asset in build_published_assets(config)]
    published_jobs = build_published_jobs(configs)
    derived_job = [job for job in published_jobs if job.name == DERIVED_JOB]
    slices_jobs = build_slices_jobs(configs)
    rank_jobs = build_rank_jobs(configs)
    return dg.Definitions(
        assets=with_code_references(assets),
        asset_checks=[
            *build_alignment_checks(configs),
            *(build_slices_audit_check(config) for config in configs),
            *(build_tables_audit_check(config) for config in configs),
        ],
        jobs=[*published_jobs, *slices_jobs, *rank_jobs],
        sensors=[
            build_mirror_change_sensor(
                configs, settings.slices_file, [*slices_jobs, *rank_jobs, *derived_job]
            ),
            build_automation_sensor(configs),
        ],
    )

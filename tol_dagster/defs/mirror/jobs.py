"""Jobs. One resync job serves every config: each run selects one config's assets."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from tol_dagster.defs.keys import asset_key, derived_keys, resync_keys, safe_name
from tol_dagster.defs.runs import RESYNC_TAG

RESYNC_JOB = "resync_job"
AUDIT_JOB = "audit_job"
STATUS_JOB = "status_job"
DERIVED_JOB = "derived_job"
CATALOG_JOB = "catalog_job"


def slices_job_name(config: str) -> str:
    """One slices job per config: each config's slices have their own dynamic partitions."""
    return f"slices_{safe_name(config)}_job"


def _job(
    name: str, selection: dg.AssetSelection, description: str
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job run in one process: its steps run one after another anyway, and a
    process per step costs more than the step itself on small work."""
    return dg.define_asset_job(
        name, selection=selection, description=description, executor_def=dg.in_process_executor
    )


def build_jobs(configs: Sequence[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    resync = _job(
        RESYNC_JOB,
        selection=dg.AssetSelection.assets(
            *[key for config in configs for key in resync_keys(config)]
        ),
        description="Fetch what changed upstream, verify it, gate it, publish it atomically.",
    )
    audit = _job(
        AUDIT_JOB,
        selection=dg.AssetSelection.checks_for_assets(
            *[asset_key(config, "mirror") for config in configs]
        ),
        description="Re-hash the mirror against its manifest and upstream; report drift.",
    )
    status = _job(
        STATUS_JOB,
        selection=dg.AssetSelection.assets(*[asset_key(config, "remote") for config in configs]),
        description="Read upstream's state and how far the mirror is behind it (no downloads).",
    )
    derived = _job(
        DERIVED_JOB,
        selection=dg.AssetSelection.assets(
            *[key for config in configs for key in derived_keys(config)]
        ),
        description="Summaries, taxon index and centroids of the published mirror (incremental per file).",
    )
    catalog = _job(
        CATALOG_JOB,
        selection=dg.AssetSelection.assets(*[asset_key(config, "catalog") for config in configs]),
        description="Rewrite the catalog of published slices.",
    )
    slices = [
        _job(
            slices_job_name(config),
            selection=dg.AssetSelection.assets(asset_key(config, "slices")),
            description=f"Build one slice of {config} (a partition per slice key).",
        )
        for config in configs
    ]
    return [resync, audit, status, derived, catalog, *slices]


def resync_run_tags(config: str, commit: str | None) -> dict[str, str]:
    """Tags of a resync run: `tol/resync=<config>` is what the queue serializes on."""
    tags = {RESYNC_TAG: config}
    if commit:
        tags["tol/commit"] = commit
    return tags

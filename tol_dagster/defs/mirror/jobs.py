"""The mirror's jobs. One resync job serves every config: each run selects one config's assets."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from tol_dagster.defs.executors import asset_job, assets_job, of_every_config
from tol_dagster.defs.keys import HUB_RETRY_TAG, RESYNC_TAG, asset_key, derived_table_keys
from tol_dagster.defs.mirror.adoption import build_adopt_job
from tol_dagster.defs.mirror.keys import resync_keys

RESYNC_JOB = "resync_job"
AUDIT_JOB = "audit_job"
STATUS_JOB = "status_job"


def build_mirror_jobs(configs: Sequence[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    """The resync, audit and status jobs over every config, and one adopt job per config."""

    def audited(config: str) -> list[dg.AssetKey]:
        return [
            asset_key(config, "mirror"),
            asset_key(config, "catalog"),
            *derived_table_keys(config),
        ]

    def remotes(config: str) -> list[dg.AssetKey]:
        return [asset_key(config, "remote")]

    resync = "Fetch what changed upstream, verify it, gate it, publish it atomically."
    audit = (
        "Re-hash the mirror against its manifest and upstream, each published slice against "
        "the catalog and each derived table against its build's record; report drift."
    )
    status = (
        "Read upstream's state and how far the mirror is behind it (no downloads; an "
        "unreachable Hub is reported after one short retry)."
    )
    return [
        assets_job(RESYNC_JOB, configs, resync_keys, resync),
        asset_job(
            AUDIT_JOB,
            dg.AssetSelection.checks_for_assets(*of_every_config(configs, audited)),
            audit,
        ),
        assets_job(STATUS_JOB, configs, remotes, status, {HUB_RETRY_TAG: "quick"}),
        *(build_adopt_job(config, resync_run_tags(config, None)) for config in configs),
    ]


def resync_run_tags(config: str, commit: str | None) -> dict[str, str]:
    """Tags of a resync run: `tol/resync=<config>` is what the queue serializes on."""
    tags = {RESYNC_TAG: config}
    if commit:
        tags["tol/commit"] = commit
    return tags

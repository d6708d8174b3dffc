"""The published outputs' jobs: derived tables and the catalog over every config (what the
command line runs), and per config one slices job and one rank job (a job cannot mix
partitions definitions)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from tol_dagster.defs.executors import asset_job, assets_job
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.defs.published.keys import derived_keys

DERIVED_JOB = "derived_job"
CATALOG_JOB = "catalog_job"


def slices_job_name(config: str) -> str:
    """One slices job per config: each config's slices have their own dynamic partitions.

    Capitalised on purpose: the UI's Materialize runs an asset under the first of its jobs in
    sorted order, and a name that sorts before Dagster's implicit `__ASSET_JOB` (uppercase
    letters come before `_`) makes a slice launched from the UI run under this job."""
    return f"Slices_{safe_name(config)}_job"


def rank_slices_job_name(config: str) -> str:
    """One rank job per config, capitalised as `slices_job_name` is (the UI's Materialize)."""
    return f"Rank_slices_{safe_name(config)}_job"


def build_published_jobs(configs: Sequence[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    def catalogs(config: str) -> list[dg.AssetKey]:
        return [asset_key(config, "catalog")]

    derived = "Summaries, taxon index and centroids of the published mirror (incremental per file)."
    return [
        assets_job(DERIVED_JOB, configs, derived_keys, derived),
        assets_job(CATALOG_JOB, configs, catalogs, "Rewrite the catalog of published slices."),
    ]


def build_slices_jobs(configs: Sequence[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        asset_job(
            slices_job_name(config),
            dg.AssetSelection.assets(asset_key(config, "slices")),
            f"Build one slice of {config} (a partition per slice key).",
        )
        for config in configs
    ]


def build_rank_jobs(configs: Sequence[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        asset_job(
            rank_slices_job_name(config),
            dg.AssetSelection.assets(asset_key(config, "rank_slices")),
            f"Publish every value of one rank of {config} as a slice, in one pass (a partition "
            "per rank).",
        )
        for config in configs
    ]

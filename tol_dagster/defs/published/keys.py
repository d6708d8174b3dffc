"""The published domain's names: its group, what a derived run selects, where a slice run's
config goes."""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.keys import asset_key, derived_table_keys, op_name, safe_name
from tol_dagster.derived.summaries import SUMMARY_NAMES


def published_group(config: str) -> str:
    return f"published_{safe_name(config)}"


def summary_keys(config: str) -> dict[str, dg.AssetKey]:
    """Each summary table's asset, by table name."""
    return {table: asset_key(config, "summary", table) for table in SUMMARY_NAMES}


def slice_inputs(config: str) -> list[dg.AssetKey]:
    """What a slice is cut with: the mirror, the taxon index (where), the lineage (counts)."""
    return [
        asset_key(config, "mirror"),
        asset_key(config, "taxon_index"),
        summary_keys(config)["lineage"],
    ]


def derived_keys(config: str) -> list[dg.AssetKey]:
    """Outputs rebuilt after every published resync, before any slice."""
    return derived_table_keys(config)


def rank_slices_op_name(config: str) -> str:
    """The op that runs `tol/<config>/rank_slices`: where a rank run's config (min_rows) goes."""
    return op_name(config, "rank_slices")


def slices_op_name(config: str) -> str:
    """The op that runs `tol/<config>/slices`: where a slice run's config (allow_empty) goes."""
    return op_name(config, "slices")

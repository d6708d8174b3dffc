"""Asset keys and names: the public contract other code locations depend on.

Per config, with the config name verbatim: `tol/<config>/remote`, `tol/<config>/staged`,
`tol/<config>/mirror`, and (issue 4) `tol/<config>/summary/<name>`, `taxon_index`, `slices`,
`catalog`, `centroids`.
"""

from __future__ import annotations

import re

import dagster as dg


def asset_key(config: str, *parts: str) -> dg.AssetKey:
    return dg.AssetKey(["tol", config, *parts])


def safe_name(config: str) -> str:
    """`config` as a Dagster name (groups, ops): letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", config)


def mirror_group(config: str) -> str:
    return f"mirror_{safe_name(config)}"


def resync_keys(config: str) -> list[dg.AssetKey]:
    """What one resync of `config` materializes (the staged asset carries the gate's checks)."""
    return [asset_key(config, "remote"), asset_key(config, "staged"), asset_key(config, "mirror")]


def resync_check_keys(config: str) -> list[dg.AssetCheckKey]:
    """The checks a resync runs: the gate on `staged`. Selecting `resync_keys` alone would add
    the mirror's audit, which re-hashes every published file and asks the Hub again: the
    audit schedule's job, not every resync's."""
    from tol_dagster.resync.gate import GATE_CHECKS

    return [dg.AssetCheckKey(asset_key(config, "staged"), name) for name in GATE_CHECKS]


def staged_op_name(config: str) -> str:
    """The op that runs `tol/<config>/staged`: where a resync's run config goes."""
    return asset_key(config, "staged").to_python_identifier()


def slices_op_name(config: str) -> str:
    """The op that runs `tol/<config>/slices`: where a slice run's config (allow_empty) goes."""
    return asset_key(config, "slices").to_python_identifier()


def published_group(config: str) -> str:
    return f"published_{safe_name(config)}"


def slices_partitions_name(config: str) -> str:
    """The dynamic partitions (one per slice key) of `tol/<config>/slices`."""
    return f"slices_{safe_name(config)}"


def derived_keys(config: str) -> list[dg.AssetKey]:
    """Outputs rebuilt after every published resync, before any slice."""
    from tol_dagster.derived.summaries import SUMMARY_NAMES

    return [
        *(asset_key(config, "summary", name) for name in SUMMARY_NAMES),
        asset_key(config, "taxon_index"),
        asset_key(config, "centroids"),
    ]

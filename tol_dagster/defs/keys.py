"""Asset keys and Dagster names: the public contract other code locations depend on.

Per config, with the config name verbatim: `tol/<config>/remote`, `tol/<config>/staged`,
`tol/<config>/mirror`, and (issue 4) `tol/<config>/summary/<name>`, `taxon_index`, `slices`,
`catalog`, `centroids`. The names each domain derives from these (its group, what a run
selects) live with the domain: `defs.mirror.keys`, `defs.published.keys`.
"""

from __future__ import annotations

import re

import dagster as dg

from tol_dagster.derived.table_audit import DERIVED_TABLES

#: The tag every resync run carries (`tol/resync=<config>`): what the queue serializes resyncs
#: on (dagster.yaml's tag_concurrency_limits) and how orphaned ones are found.
RESYNC_TAG = "tol/resync"
#: Who launched a run: `cli`, `demo`, `sensor` or `schedule` (the UI's own launches carry none).
SOURCE_TAG = "tol/source"
#: How a run's `remote` asks the Hub: `quick` (set on `status_job`) gives up after one short
#: retry, as the sensors do; without it, the patient policy a resync wants.
HUB_RETRY_TAG = "tol/hub-retry"


def source_tags(source: str) -> dict[str, str]:
    return {SOURCE_TAG: source}


def asset_key(config: str, *parts: str) -> dg.AssetKey:
    return dg.AssetKey(["tol", config, *parts])


def derived_table_keys(config: str) -> list[dg.AssetKey]:
    """The derived tables of `config` (summaries, taxon index, centroids): the published
    domain builds them, the audit job checks them."""
    return [asset_key(config, *table.split("/")) for table in DERIVED_TABLES]


def safe_name(config: str) -> str:
    """`config` as a Dagster name (groups, ops): letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", config)


def op_name(config: str, *parts: str) -> str:
    """The op that runs `tol/<config>/<parts>`: where that asset's run config goes."""
    return asset_key(config, *parts).to_python_identifier()

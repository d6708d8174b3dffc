"""What the latest evaluation of a check named, from Dagster's record of it: the audits only
report, and what repairs (a resync, the slice sensor) reads its list there."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)


@dataclass(frozen=True)
class Named:
    """The names one evaluation listed under a metadata key; `evaluation_id` tells
    evaluations apart (a repair asked once per evaluation)."""

    evaluation_id: int
    names: list[str]


def latest_named(instance: dg.DagsterInstance, check: dg.AssetCheckKey, key: str) -> Named | None:
    """The names the latest completed evaluation of `check` listed under metadata `key`
    (none listed: an empty list); None if `check` was never evaluated."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        check, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    )
    evaluation = records[0].evaluation if records else None
    if evaluation is None:
        return None
    named = evaluation.metadata.get(key)
    names = named.value if isinstance(named, dg.JsonMetadataValue) else None
    listed = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    return Named(records[0].id, listed)

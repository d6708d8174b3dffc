"""What the latest evaluation of a check found, from Dagster's record of it: the audits only
report, and what repairs (a resync, the slice sensor, the command line) reads it there."""

from __future__ import annotations

from collections.abc import Mapping
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


@dataclass(frozen=True)
class Evaluation:
    """A check's completed evaluation: its record's id (tells evaluations apart) and verdict."""

    id: int
    passed: bool
    metadata: Mapping[str, dg.MetadataValue]


def latest_evaluation(instance: dg.DagsterInstance, check: dg.AssetCheckKey) -> Evaluation | None:
    """The latest completed evaluation of `check`; None if it was never evaluated."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        check, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    )
    evaluation = records[0].evaluation if records else None
    if evaluation is None:
        return None
    return Evaluation(records[0].id, evaluation.passed, evaluation.metadata)


def latest_named(instance: dg.DagsterInstance, check: dg.AssetCheckKey, key: str) -> Named | None:
    """The names the latest completed evaluation of `check` listed under metadata `key`
    (none listed: an empty list); None if `check` was never evaluated."""
    evaluation = latest_evaluation(instance, check)
    if evaluation is None:
        return None
    named = evaluation.metadata.get(key)
    names = named.value if isinstance(named, dg.JsonMetadataValue) else None
    listed = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    return Named(evaluation.id, listed)

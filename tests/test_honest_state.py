"""What the UI shows after a sync is true when read later: `remote` speaks of the time of its
check, a first publish says what it added, `mirror`'s check is evaluated by every resync, and a
mirror not confirmed for `TOL_FRESHNESS_DAYS` shows as stale."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)
from resync_testing import CONFIG, User, dagster_home, upstream_rows, user

from tol_dagster.definitions import build_definitions
from tol_dagster.errors import SettingsError
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.settings import Settings

__all__ = ["dagster_home", "user"]  # fixtures, imported to be found

MIRROR = dg.AssetKey(["tol", CONFIG, "mirror"])


def metadata(user: User, key: dg.AssetKey) -> dict[str, object]:
    with user.instance() as instance:
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def audit_evaluation(user: User) -> dg.AssetCheckEvaluation:
    with user.instance() as instance:
        [record] = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(MIRROR, AUDIT_CHECK),
            limit=1,
            status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
        )
    assert record.evaluation is not None
    return record.evaluation


def test_a_first_sync_then_an_idle_one_say_what_they_did_at_the_time(user: User) -> None:
    rows = upstream_rows(user.root)
    assert user.sync().code == 0

    remote = metadata(user, dg.AssetKey(["tol", CONFIG, "remote"]))
    assert str(remote["mirror_at_check"]).startswith("At this check there was no mirror yet")
    assert remote["files_lacked_at_check"] == 3
    mirror = metadata(user, MIRROR)
    assert mirror["rows_by_taxon"] == f"First generation: {rows:,} rows added."
    first_audit = audit_evaluation(user)
    assert first_audit.passed and "3 files just published re-hashed" in str(first_audit.description)

    assert user.sync().code == 0

    remote = metadata(user, dg.AssetKey(["tol", CONFIG, "remote"]))
    assert "already held every file of this commit" in str(remote["mirror_at_check"])
    assert remote["files_lacked_at_check"] == 0
    assert metadata(user, MIRROR)["rows_by_taxon"] == "Already current: nothing published."
    idle_audit = audit_evaluation(user)
    assert idle_audit.passed and "0 files just published re-hashed, all 3 sized" in str(
        idle_audit.description
    )
    first = user.tol("status")
    assert "first generation at" in first.out, first.text


def test_the_mirror_s_freshness_window_comes_from_tol_freshness_days(tmp_path: Path) -> None:
    settings = Settings.from_env({"TOL_HOME": str(tmp_path), "TOL_FRESHNESS_DAYS": "3"})
    spec = build_definitions(settings).get_assets_def(MIRROR).specs_by_key[MIRROR]

    policy = spec.freshness_policy

    assert isinstance(policy, TimeWindowFreshnessPolicy)
    assert policy.fail_window.to_timedelta() == timedelta(days=3)
    assert Settings.from_env({"TOL_HOME": str(tmp_path)}).freshness_days == 7
    with pytest.raises(SettingsError, match="TOL_FRESHNESS_DAYS"):
        Settings.from_env({"TOL_HOME": str(tmp_path), "TOL_FRESHNESS_DAYS": "0"})

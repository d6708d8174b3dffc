"""Failures in words: a known failure in an asset or a check shows in the run view as its cause
and what to do, with its kind and exit code as metadata, and no Python stack; a bug keeps its
stack."""

from __future__ import annotations

import errno

import dagster as dg
import pytest
from resync_testing import (
    HubSleeps,
    User,
    dagster_home,
    hub_sleeps,
    set_card_rows,
    synced,
    synced_home,
    upstream_rows,
    user,
)

from tol_dagster import errors
from tol_dagster.defs.failures import FailureInWords, in_words

__all__ = [
    "dagster_home",
    "hub_sleeps",
    "synced",
    "synced_home",
    "user",
]  # fixtures, imported to be found


def step_failures(user: User) -> list[dg.DagsterEvent]:
    """The step failures of the user's latest run, as the run view shows them."""
    with user.instance() as instance:
        [run] = instance.get_runs(limit=1)
        return [
            record.dagster_event
            for record in instance.all_logs(run.run_id)
            if record.dagster_event is not None
            and record.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE
        ]


def test_a_gate_refusal_fails_the_staged_step_in_words_with_the_failed_check_first(
    synced: User,
) -> None:
    set_card_rows(synced.root, upstream_rows(synced.root) + 7)

    outcome = synced.sync()

    assert outcome.code == 1, outcome.text
    [failure] = step_failures(synced)
    data = failure.step_failure_data
    assert data.error is not None and data.user_failure_data is not None
    assert data.error.stack == [], "no Python stack for a refusal"
    assert data.error.cls_name == "ValidationFailed"
    description = data.user_failure_data.description or ""
    assert description.startswith("bioclip-2_float16: the gate refused commit")
    assert "rows_match_card: the files hold" in description
    assert "--accept-row-loss" in description, "it says what to do"
    metadata = data.user_failure_data.metadata
    assert metadata["exit_code"].value == 1
    assert metadata["meaning"].value == "the gate refused the new state"


def test_an_unreachable_hub_fails_remote_in_words_naming_the_endpoint(
    synced: User, monkeypatch: pytest.MonkeyPatch, hub_sleeps: HubSleeps
) -> None:
    closed = "http://127.0.0.1:9"  # discard: nothing listens
    monkeypatch.setenv("TOL_HUB_ENDPOINT", closed)

    outcome = synced.tol("status")

    assert outcome.code == 3, outcome.text
    assert hub_sleeps.asked == [0.5], "status asks once more, soon, and answers"
    [failure] = step_failures(synced)
    data = failure.step_failure_data
    assert data.error is not None and data.error.stack == []
    assert closed in data.error.message
    assert data.user_failure_data.metadata["exit_code"].value == 3


def test_a_full_disk_becomes_a_storage_failure_and_a_bug_keeps_its_stack() -> None:
    @in_words
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.parquet")

    @in_words
    def buggy() -> None:
        raise ValueError("a bug")

    with pytest.raises(FailureInWords) as full_disk:
        full()
    assert full_disk.value.metadata["exit_code"].value == 4
    assert full_disk.value.metadata["cause"].value == "LocalStorageError"
    assert "/data/x.parquet" in (full_disk.value.description or "")
    with pytest.raises(ValueError, match="a bug") as bug:
        buggy()
    assert bug.value.__traceback__ is not None


def test_a_generator_body_keeps_what_it_yielded_before_failing_in_words() -> None:
    @in_words
    def body():  # type: ignore[no-untyped-def]
        yield 1
        raise errors.SliceSpecError("family=: the value is empty; write family=Felidae")

    seen = []
    with pytest.raises(FailureInWords) as failure:
        for item in body():
            seen.append(item)
    assert seen == [1]
    assert failure.value.metadata["exit_code"].value == 2

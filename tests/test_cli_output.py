"""What the command line shows (issue 9, items 4 and 5): a bar and a report on a terminal,
one JSON document with `--json`, nothing but errors with `--quiet`, Dagster's own lines only
with `--verbose`; and runs that the UI can re-execute as they are (the code location's job,
tagged `tol/source`), their killed processes still found.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.definitions_class import SINGLETON_REPOSITORY_NAME
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from resync_testing import (
    CONFIG,
    Outcome,
    User,
    dagster_home,
    file_names,
    manifest,
    mirror_view,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)

from tol_dagster.cli.launch import CODE_LOCATION
from tol_dagster.defs.keys import RESYNC_TAG
from tol_dagster.defs.orphaned_runs import HOST_TAG, PID_TAG, SOURCE_TAG
from tol_dagster.devtools.localhub import Fault

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures

ROOT = Path(__file__).resolve().parents[1]
#: A line of Dagster's own console logger.
DAGSTER_LINE = re.compile(r"^\S+ \S+ \+\d{4} - dagster - ", re.MULTILINE)


def _only_run(user: User, **tags: str) -> dg.DagsterRun:
    with user.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags=tags))
        return run


def _snapshot_the_ui_matches(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """GraphQL's `parentPipelineSnapshotId ?? pipelineSnapshotId` of `run`: the id the UI looks
    for among the loaded jobs (dagster_graphql's `resolve_parentPipelineSnapshotId`)."""
    assert run.job_snapshot_id is not None
    lineage = instance.get_job_snapshot(run.job_snapshot_id).lineage_snapshot
    return lineage.parent_snapshot_id if lineage is not None else run.job_snapshot_id


# --- runs the UI re-executes as they are ----------------------------------------------------------


def test_a_cli_run_is_the_code_locations_job_with_its_origin(user: User) -> None:
    """What dagster-webserver compares before offering Re-execute without "the job may be a
    different version" (`useRepositoryForRun`): the run's origin names the loaded location and
    repository, and its (parent) job snapshot is the one that location serves."""
    assert user.sync().code == 0
    run = _only_run(user, **{RESYNC_TAG: CONFIG})
    target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with (
        user.instance() as instance,
        WorkspaceProcessContext(instance, target) as workspace,
    ):
        location = workspace.create_request_context().get_code_location(CODE_LOCATION)
        repository = location.get_repository(SINGLETON_REPOSITORY_NAME)
        served = repository.get_full_job(run.job_name).identifying_job_snapshot_id
        assert run.asset_selection, "a subset of the resync job: its parent is the served job"
        assert _snapshot_the_ui_matches(instance, run) == served
    assert run.remote_job_origin is not None
    origin = run.remote_job_origin.repository_origin
    assert (origin.code_location_origin.location_name, origin.repository_name) == (
        location.name,
        repository.name,
    )

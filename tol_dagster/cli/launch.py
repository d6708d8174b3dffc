"""A command-line run, made as the UI would make it: the code location's job, its origin.

The UI offers Re-execute without "the job may be a different version" only when a run names
the code location and repository it came from (`remote_job_origin`) and its job snapshot (or,
for a subset, its parent's) is the one the code location serves (dagster-webserver's
`useRepositoryForRun`: "origin-and-snapshot"). `execute_in_process` records neither: it runs
an ephemeral copy of the job (another executor, so another snapshot) with no origin. So the
command line loads the definitions exactly as the code location does (`load_code_location`),
creates the run itself with the location's origin, and executes it in this process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Set
from typing import Any

import dagster as dg
from dagster._core.definitions.definitions_class import SINGLETON_REPOSITORY_NAME
from dagster._core.definitions.job_base import IJob, InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.workspace.load_target import location_origin_from_module_name

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.resources import ConfigSource
from tol_dagster.settings import Settings

#: The code location as workspace.yaml and pyproject's `[tool.dagster]` name it.
CODE_LOCATION = "tol_dagster"
DEFINITIONS_MODULE = "tol_dagster.definitions"


def load_code_location(settings: Settings) -> dg.Definitions:
    """The definitions as `tol_dagster.definitions.defs` builds them for the webserver and the
    daemon (resources from the environment), so each job's snapshot is theirs."""
    return build_definitions(settings, ConfigSource(os.environ))


def job_origin(job_name: str) -> RemoteJobOrigin:
    """Where the UI finds `job_name`: our code location's one repository."""
    location = location_origin_from_module_name(
        DEFINITIONS_MODULE, None, os.getcwd(), location_name=CODE_LOCATION
    )
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)


def create_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    *,
    run_id: str,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    partition_key: str | None = None,
    asset_selection: Set[dg.AssetKey] | None = None,
    asset_check_selection: Set[dg.AssetCheckKey] | None = None,
) -> dg.DagsterRun:
    """The run of `job` (the code location's), subset to the selections, with its origin."""
    subset = job
    if asset_selection is not None or asset_check_selection is not None:
        subset = job.get_subset(
            asset_selection=asset_selection, asset_check_selection=asset_check_selection
        )
    run_tags = merge_run_tags(
        job, partition_key, tags, list(asset_selection or ()), instance, run_config
    )
    plan = create_execution_plan(
        subset, run_config=run_config, instance_ref=instance.get_ref(), tags=run_tags
    )
    return instance.create_run(
        job_name=job.name,
        run_id=run_id,
        run_config=run_config,
        status=None,
        tags=run_tags,
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, subset.get_job_snapshot_id()),
        job_snapshot=subset.get_job_snapshot(),
        parent_job_snapshot=subset.get_parent_job_snapshot(),
        asset_selection=frozenset(asset_selection) if asset_selection is not None else None,
        asset_check_selection=(
            frozenset(asset_check_selection) if asset_check_selection is not None else None
        ),
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=job_origin(job.name),
        job_code_origin=None,
        asset_graph=subset.asset_layer.asset_graph,
    )


def execute_created(
    job: dg.JobDefinition, run: dg.DagsterRun, instance: dg.DagsterInstance
) -> ExecutionResult:
    """Execute `run` (made by `create_run` from `job`) from here with the job's own executor
    (`TOL_EXECUTOR`, see `tol_dagster.defs.executors`), failures recorded rather than raised."""
    return execute_run(executable(job), run, instance, raise_on_error=False)


def runs_in_children(job: dg.JobDefinition) -> bool:
    """True when `job`'s steps run in processes this one starts (`TOL_EXECUTOR=multiprocess`)."""
    return job.executor_def.name == dg.multiprocess_executor.name


def runs_elsewhere(job: dg.JobDefinition) -> bool:
    """True when `job`'s executor runs its steps outside this process (`TOL_EXECUTOR`)."""
    return job.executor_def.name != dg.in_process_executor.name


def executable(job: dg.JobDefinition) -> IJob:
    """`job` as its executor needs it: in this process, the definition itself; in other
    processes or on workers, where to load it from (the code location's module)."""
    if not runs_elsewhere(job):
        return InMemoryJob(job)
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=os.getcwd()
    )
    return repository.get_reconstructable_job(job.name)

"""The executor of every job, chosen by `TOL_EXECUTOR`, holding each run's resync leases.

- `in_process` (default): every step in the run's process, one after another; small steps cost
  less there than a process each.
- `multiprocess`: a process per step on this machine, at most `TOL_WORKERS` at once.
- `celery` (dagster-celery): each step a task on `TOL_CELERY_BROKER`'s queue, run by
  `tol-dagster worker`s on any machine sharing `TOL_HOME` and the instance.
- `k8s` (dagster-k8s): a Kubernetes job per step, at most `TOL_WORKERS` at once.

Whichever it is, it is wrapped: the run's orchestrating process holds the leases of the configs
the run resyncs (`resync_slot.run_leases`: across machines on PostgreSQL) from before its first
step to after its last, so `staged` and `mirror` of two runs never interleave wherever their
steps run; it records itself on the run, so that a run whose process died is told and failed
(`orphaned_runs`); and before a Celery run sends a task its broker must answer (else exit 3).
Jobs take the definitions' executor: the UI's Materialize and the automation's runs get it too.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor
from dagster._core.executor.init import InitExecutorContext

from tol_dagster.cluster_settings import (
    BACKEND_VAR,
    BROKER_VAR,
    CELERY,
    K8S,
    K8S_EXTRA,
    MULTIPROCESS,
    ClusterSettings,
    require_extra,
)
from tol_dagster.defs.celery_app import celery_config, check_broker, check_consumers
from tol_dagster.defs.mirror.resync_slot import LEASED_TAG, run_leases
from tol_dagster.defs.orphaned_runs import tag_run_process
from tol_dagster.defs.resources import LITERALS, ConfigSource
from tol_dagster.settings import Settings


def run_executor(settings: Settings, source: ConfigSource = LITERALS) -> dg.ExecutorDefinition:
    """`TOL_EXECUTOR`'s executor, holding the leases of the runs of `settings`' configs."""
    inner = chosen_executor(settings.cluster, source)
    cluster = settings.cluster
    preflight = (
        functools.partial(_celery_preflight, cluster.celery_broker, cluster.celery_queue)
        if cluster.executor == CELERY and cluster.celery_broker is not None
        else None
    )

    def create(context: InitExecutorContext) -> Executor:
        assert inner.executor_creation_fn is not None
        return LeasedExecutor(
            inner.executor_creation_fn(context),
            home=settings.home,
            configs=settings.configs,
            pg_url=cluster.pg_url,
            preflight=preflight,
        )

    return dg.ExecutorDefinition(
        name=inner.name,
        config_schema=inner.config_schema,  # type: ignore[arg-type]  # Dagster accepts its own
        requirements=inner.get_requirements,
        executor_creation_fn=create,
        description=inner.description,
    )


def _celery_preflight(broker: str, queue: str) -> None:
    """Before a run sends its steps: the broker answers, and a worker serves the queue."""
    check_broker(broker)
    check_consumers(broker, queue)


def chosen_executor(cluster: ClusterSettings, source: ConfigSource) -> dg.ExecutorDefinition:
    """Dagster's executor for `cluster.executor`, configured; a URL from the environment is
    named by its variable in the run config (`{"env": …}`), never written out."""
    if cluster.executor == MULTIPROCESS:
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": cluster.workers,
                "start_method": {"forkserver": {"preload_modules": ["tol_dagster.definitions"]}},
            }
        )
    if cluster.executor == CELERY:
        assert cluster.celery_broker is not None and cluster.celery_backend is not None
        return require_extra("dagster_celery").celery_executor.configured(
            {
                "broker": source.config(BROKER_VAR, cluster.celery_broker),
                "backend": source.config(BACKEND_VAR, cluster.celery_backend),
                "config_source": celery_config(cluster),
            }
        )
    if cluster.executor == K8S:
        return require_extra("dagster_k8s", K8S_EXTRA).k8s_job_executor.configured(
            {"max_concurrent": cluster.workers}
        )
    return dg.in_process_executor


class LeasedExecutor(Executor):
    """`inner`, with the run's resync leases held around all its steps (see the module)."""

    def __init__(
        self,
        inner: Executor,
        *,
        home: Path,
        configs: Sequence[str],
        pg_url: str | None,
        preflight: Callable[[], None] | None,
    ) -> None:
        self.inner = inner
        self._home = home
        self._configs = list(configs)
        self._pg_url = pg_url
        self._preflight = preflight

    @property
    def retries(self) -> RetryMode:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.inner.step_dependency_config

    def __getattr__(self, name: str) -> Any:
        # dagster-celery's loop reads its executor's settings (`app_args()`) from the context.
        return getattr(self.inner, name)

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        if self._preflight is not None and execution_plan.step_keys_to_execute:
            self._preflight()
        run = plan_context.dagster_run
        instance = plan_context.instance
        with (
            run_leases(self._home, self._configs, run, self._pg_url, plan_context.log.info),
            warnings.catch_warnings(),
        ):
            # dagster-celery registers its task anew for each step it sends, and Celery says so
            warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already")
            instance.add_run_tags(run.run_id, {LEASED_TAG: "executor"})
            tag_run_process(instance, run.run_id)
            yield from self.inner.execute(plan_context, execution_plan)


def asset_job(
    name: str,
    selection: dg.AssetSelection,
    description: str,
    tags: Mapping[str, str] | None = None,
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job over `selection` (its runs tagged `tags`), run by the definitions'
    executor (`run_executor`)."""
    return dg.define_asset_job(name, selection=selection, description=description, tags=tags)


def of_every_config(
    configs: Sequence[str], keys: Callable[[str], Iterable[dg.AssetKey]]
) -> list[dg.AssetKey]:
    """`keys(config)` of every config, in order: what a job over all configs selects."""
    return [key for config in configs for key in keys(config)]


def assets_job(
    name: str,
    configs: Sequence[str],
    keys: Callable[[str], Iterable[dg.AssetKey]],
    description: str,
    tags: Mapping[str, str] | None = None,
) -> dg.UnresolvedAssetJobDefinition:
    """A job materializing `keys(config)` of every config (each run selects some)."""
    selection = dg.AssetSelection.assets(*of_every_config(configs, keys))
    return asset_job(name, selection, description, tags)

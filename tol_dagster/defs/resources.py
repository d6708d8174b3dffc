"""Resources: every external system behind a `ConfigurableResource`, defaults from the environment.

The Hub token is not a field: `HubResource.client()` reads it at call time (`HF_TOKEN` or the
token `hf auth login` saved), so it never lands in run config, metadata or the event log, and
an unset `HF_TOKEN` does not stop the code location from loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from tol_dagster.settings import Settings, hub_token
from tol_dagster.store.layout import Layout

if TYPE_CHECKING:
    from tol_dagster.hub.retry import RetryPolicy


class HubResource(dg.ConfigurableResource):
    """The Hugging Face Hub (or the local Hub in demo, dev and tests)."""

    endpoint: str
    repo_id: str
    max_parallel_downloads: int = 4
    max_retry_wait_s: int = 300
    stall_timeout_s: int = 120
    sync_deadline_s: int | None = None
    _run_started: float | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Note when the run started: `TOL_SYNC_DEADLINE_S` counts from there, across steps."""
        self._run_started = _run_start_time(context)

    def client(self, retry: RetryPolicy | None = None):  # -> HubClient (imported lazily: slow)
        """A client with `retry` (default: the patient policy downloads want), bounded by the
        settings' waits: the server's wait, the stall timeout and the deadline."""
        from dataclasses import replace

        from tol_dagster.hub.client import HubClient
        from tol_dagster.hub.retry import RetryPolicy

        policy = retry or RetryPolicy(max_server_wait_s=self.max_retry_wait_s)
        policy = replace(
            policy,
            max_server_wait_s=min(policy.max_server_wait_s, self.max_retry_wait_s),
            stall_timeout_s=self.stall_timeout_s,
            deadline_s=self.sync_deadline_s,
        )
        return HubClient(
            self.endpoint, self.repo_id, hub_token(), retry=policy, started=self._run_started
        )


def _run_start_time(context: dg.InitResourceContext) -> float | None:
    """The run's start (epoch seconds) as Dagster recorded it; None outside a run (sensors)."""
    run = context.run
    if context.instance is None or run is None:
        return None
    record = context.instance.get_run_record_by_id(run.run_id)
    return record.start_time if record is not None else None


class StorageResource(dg.ConfigurableResource):
    """The data home (`TOL_HOME`): mirror, published outputs and private state."""

    home: str

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.home))


class GateResource(dg.ConfigurableResource):
    """Policy of the validation gate."""

    max_row_loss: float = 0.01


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources for `settings` (usually `Settings.from_env()`)."""
    return {
        "hub": HubResource(
            endpoint=settings.hub_endpoint,
            repo_id=settings.repo_id,
            max_parallel_downloads=settings.max_parallel_downloads,
            max_retry_wait_s=settings.max_retry_wait_s,
            stall_timeout_s=settings.stall_timeout_s,
            sync_deadline_s=settings.sync_deadline_s,
        ),
        "storage": StorageResource(home=str(settings.home)),
        "gate": GateResource(max_row_loss=settings.max_row_loss),
    }

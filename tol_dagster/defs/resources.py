"""Resources: every external system behind a `ConfigurableResource`, configured from the settings.

The Hub token is not a field: `HubResource.client()` reads it at call time (`HF_TOKEN` or the
token `hf auth login` saved), so it never lands in run config, metadata or the event log, and
an unset `HF_TOKEN` does not stop the code location from loading.

Where the code location's value is a variable's text as the environment holds it, the field is
a `dg.EnvVar`: the UI shows which variable configures it, and a run reads it from its own
environment (the daemon's runs inherit the code location's). A default, or a value the
settings normalized (a relative `TOL_HOME` made absolute, an endpoint's trailing slash
dropped), stays a literal: a run never resolves another value than the one validated when the
code location loaded. Dagster's config has no float source, so the gate's share is a literal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from tol_dagster.batches import BatchPolicy, parallelism
from tol_dagster.hub.client import HubClient, RetryPolicy
from tol_dagster.settings import Settings, hub_token
from tol_dagster.store.layout import Layout


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

    def client(self, retry: RetryPolicy | None = None) -> HubClient:
        """A client with `retry` (default: the patient policy downloads want), bounded by the
        settings' waits: the server's wait, the stall timeout and the deadline."""
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


#: The IO manager of values passed between the steps of per-file work (`StepsResource`).
STEP_IO = "step_io"


class StepsResource(dg.ConfigurableResource):
    """How per-file work is cut into steps (`tol_dagster.batches`): how many steps the executor
    runs at once, and `TOL_STEP_BATCH_FILES`; and the processes of a whole rank's pass
    (`TOL_RANK_WORKERS`)."""

    parallelism: int = 1
    batch_files: int | None = None
    rank_workers: int = 1

    def policy(self) -> BatchPolicy:
        return BatchPolicy(parallelism=self.parallelism, batch_files=self.batch_files)


class GateResource(dg.ConfigurableResource):
    """Policy of the validation gate."""

    max_row_loss: float = 0.01


@dataclass(frozen=True)
class ConfigSource:
    """Where a resource field's value comes from: the environment the settings were read from
    (`os.environ` for the code location), or none (tests, the command line: literals)."""

    env: Mapping[str, str] | None = None

    def text(self, name: str, value: str) -> str:
        """`dg.EnvVar(name)` when the environment holds `value` verbatim, else `value`."""
        return dg.EnvVar(name) if self._holds(name, value) else value

    def config(self, name: str, value: str) -> str | dict[str, str]:
        """The same in run config's spelling: `{"env": name}`, else `value`."""
        return {"env": name} if self._holds(name, value) else value

    def number(self, name: str, value: int) -> int:
        return dg.EnvVar.int(name) if self._holds(name, str(value)) else value

    def _holds(self, name: str, value: str) -> bool:
        return self.env is not None and self.env.get(name) == value

    def home(self, settings: Settings) -> str:
        return self.text("TOL_HOME", str(settings.home))


#: No environment: every field a literal (tests, the command line, which run in this process).
LITERALS = ConfigSource()


def resources_from(
    settings: Settings, source: ConfigSource = LITERALS
) -> dict[str, dg.ConfigurableResource | dg.FilesystemIOManager]:
    """The resources for `settings` (usually `Settings.from_env()`)."""
    deadline = settings.sync_deadline_s
    return {
        "hub": HubResource(
            endpoint=source.text("TOL_HUB_ENDPOINT", settings.hub_endpoint),
            repo_id=source.text("TOL_REPO_ID", settings.repo_id),
            max_parallel_downloads=source.number(
                "TOL_MAX_PARALLEL_DOWNLOADS", settings.max_parallel_downloads
            ),
            max_retry_wait_s=source.number("TOL_MAX_RETRY_WAIT_S", settings.max_retry_wait_s),
            stall_timeout_s=source.number("TOL_STALL_TIMEOUT_S", settings.stall_timeout_s),
            sync_deadline_s=None
            if deadline is None
            else source.number("TOL_SYNC_DEADLINE_S", deadline),
        ),
        "storage": StorageResource(home=source.home(settings)),
        "gate": GateResource(max_row_loss=settings.max_row_loss),
        STEP_IO: dg.FilesystemIOManager(base_dir=str(settings.layout.step_outputs_dir())),
        "steps": StepsResource(
            parallelism=parallelism(settings.cluster),
            batch_files=None
            if settings.step_batch_files is None
            else source.number("TOL_STEP_BATCH_FILES", settings.step_batch_files),
            rank_workers=source.number("TOL_RANK_WORKERS", settings.rank_workers),
        ),
    }

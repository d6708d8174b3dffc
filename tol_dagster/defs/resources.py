"""Resources: every external system behind a `ConfigurableResource`, defaults from the environment.

The Hub token is not a field: `HubResource.client()` reads it at call time (`HF_TOKEN` or the
token `hf auth login` saved), so it never lands in run config, metadata or the event log, and
an unset `HF_TOKEN` does not stop the code location from loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from tol_dagster.layout import Layout
from tol_dagster.settings import Settings, hub_token

if TYPE_CHECKING:
    from tol_dagster.hub import RetryPolicy


class HubResource(dg.ConfigurableResource):
    """The Hugging Face Hub (or the local Hub in demo, dev and tests)."""

    endpoint: str
    repo_id: str
    max_parallel_downloads: int = 4

    def client(self, retry: RetryPolicy | None = None):  # -> HubClient (imported lazily: slow)
        """A client with `retry` (default: the patient policy downloads want)."""
        from tol_dagster.hub import HubClient, RetryPolicy

        return HubClient(self.endpoint, self.repo_id, hub_token(), retry=retry or RetryPolicy())


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
        ),
        "storage": StorageResource(home=str(settings.home)),
        "gate": GateResource(max_row_loss=settings.max_row_loss),
    }

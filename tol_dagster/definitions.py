"""The code location: the mirror's and the published outputs' definitions, merged here and only
here, with the resources and the executor they share.

`dagster dev` and the daemon load `defs` (workspace.yaml, pyproject's `[tool.dagster]`): a
`@dg.definitions` function, so the environment is read when the code location loads, not when
this module is imported. The command line and tests call `build_definitions(settings)`.
"""

from __future__ import annotations

import os

import dagster as dg

from tol_dagster.cluster_settings import PG_URL_VAR
from tol_dagster.defs.executors import run_executor
from tol_dagster.defs.mirror.definitions import build_mirror_definitions
from tol_dagster.defs.mirror.resync_slot import ResyncSlotResource
from tol_dagster.defs.published.definitions import build_published_definitions
from tol_dagster.defs.resources import LITERALS, ConfigSource, resources_from
from tol_dagster.settings import Settings


def build_definitions(settings: Settings, source: ConfigSource = LITERALS) -> dg.Definitions:
    """All definitions for `settings` (one set of assets per configured config). `source`: the
    environment the settings came from, for the resources' `dg.EnvVar`s (none: literals)."""
    pg_url = settings.cluster.pg_url
    shared = dg.Definitions(
        resources={
            **resources_from(settings, source),
            # Held for a whole run (a context manager), so kept out of `resources_from`, which
            # sensors and tests build contexts from.
            "resync_slot": ResyncSlotResource(
                home=source.home(settings),
                configs=list(settings.configs),
                pg_url=None if pg_url is None else source.text(PG_URL_VAR, pg_url),
            ),
        },
        # Every job's, and the implicit asset job's that the UI's Materialize and the
        # automation launch: chosen by TOL_EXECUTOR, holding each run's resync leases.
        executor=run_executor(settings, source),
    )
    return dg.Definitions.merge(
        build_mirror_definitions(settings), build_published_definitions(settings), shared
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as `dagster dev` and the daemon load it: settings from the environment."""
    return build_definitions(Settings.from_env(), ConfigSource(os.environ))

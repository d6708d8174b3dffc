"""The code location: the mirror's and the published outputs' definitions, merged here and only
here, with the resources and the executor they share.

`dagster dev` and the daemon load `defs` (workspace.yaml, pyproject's `[tool.dagster]`): a
`@dg.definitions` function, so the environment is read when the code location loads, not when
this module is imported. The command line and tests call `build_definitions(settings)`.
"""

from __future__ import annotations

import os

import dagster as dg

from tol_dagster.defs.in_process import EXECUTOR
from tol_dagster.defs.mirror.definitions import build_mirror_definitions
from tol_dagster.defs.mirror.resync_slot import ResyncSlotResource
from tol_dagster.defs.published.definitions import build_published_definitions
from tol_dagster.defs.resources import LITERALS, ConfigSource, resources_from
from tol_dagster.settings import Settings


def build_definitions(settings: Settings, source: ConfigSource = LITERALS) -> dg.Definitions:
    """All definitions for `settings` (one set of assets per configured config). `source`: the
    environment the settings came from, for the resources' `dg.EnvVar`s (none: literals)."""
    shared = dg.Definitions(
        resources={
            **resources_from(settings, source),
            # Held for a whole run (a context manager), so kept out of `resources_from`, which
            # sensors and tests build contexts from.
            "resync_slot": ResyncSlotResource(
                home=source.home(settings), configs=list(settings.configs)
            ),
        },
        # The UI's Materialize and the automation launch Dagster's implicit asset job: in one
        # process like every job here, so a resync's lease spans its `staged` and `mirror`.
        executor=EXECUTOR,
    )
    return dg.Definitions.merge(
        build_mirror_definitions(settings), build_published_definitions(settings), shared
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as `dagster dev` and the daemon load it: settings from the environment."""
    return build_definitions(Settings.from_env(), ConfigSource(os.environ))

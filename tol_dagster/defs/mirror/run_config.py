"""A resync's run config: what the command line, the sensor, the adopt jobs and the UI's
launchpad give, split between the steps that consume it.

The commit and the folder to adopt go to `fetched`'s plan step (they decide what is fetched);
the accept flags go to `staged`, whose cross-file checks they relax.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from tol_dagster.defs.keys import op_name, safe_name
from tol_dagster.errors import SettingsError
from tol_dagster.hub.untrusted import COMMIT_ID


class FetchConfig(dg.Config):
    """Run config of a resync's plan step. The sensor pins `commit`; adoption names a folder."""

    commit: str | None = Field(
        default=None,
        description=(
            "The upstream commit (40 hex digits) the run was requested for; a newer head is "
            "synced instead, saying so. Empty: upstream's head."
        ),
    )
    #: Adopt this folder (a user's `hf download` copy) before staging: see `adoption`.
    adopt_from: str | None = None
    adopt_copy: bool = False


def requested_commit(config: FetchConfig) -> str | None:
    """`config.commit`, refused in words unless a commit id (the launchpad takes any string)."""
    if config.commit is None or COMMIT_ID.fullmatch(config.commit):
        return config.commit
    raise SettingsError(
        f"run config commit {config.commit!r}: not a commit id (40 lowercase hex digits, as "
        "the Hub's history shows them); leave it empty to sync upstream's head"
    )


class StageConfig(dg.Config):
    """Run config of a resync's gate: the command line sets the accept flags."""

    accept_row_loss: bool = False
    accept_schema_change: bool = False
    accept_emb_change: bool = False


def plan_op_name(config: str) -> str:
    """The op of `tol/<config>/fetched` that takes `FetchConfig`."""
    return f"plan_{safe_name(config)}"


def staged_op_name(config: str) -> str:
    """The op that runs `tol/<config>/staged`: where the accept flags go."""
    return op_name(config, "staged")


def resync_run_config(config: str, **values: Any) -> dict[str, Any]:
    """The run config of a resync of `config` from `FetchConfig`'s and `StageConfig`'s fields
    (unknown names are refused, as Dagster would)."""
    fetch = {k: v for k, v in values.items() if k in FetchConfig.model_fields}
    gate = {k: v for k, v in values.items() if k in StageConfig.model_fields}
    unknown = set(values) - set(fetch) - set(gate)
    if unknown:
        raise ValueError(f"not a resync's run config: {', '.join(sorted(unknown))}")
    ops: dict[str, Any] = {}
    if fetch:
        ops[op_name(config, "fetched")] = {"ops": {plan_op_name(config): {"config": fetch}}}
    if gate:
        ops[staged_op_name(config)] = {"config": gate}
    return {"ops": ops}

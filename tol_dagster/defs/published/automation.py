"""Declarative automation: what Dagster can see by itself after a new mirror generation.

- The derived tables follow the mirror: requested once the mirror was materialized since they
  were last requested (a mirror seen on the tick after their request counts as after it),
  never while the mirror or they are in progress. Incremental per file,
  so a resync that published nothing new costs one short run.
- The catalog follows the slices: requested once a slice partition was materialized after the
  catalog last was, when no slice run is in progress, so one catalog run follows a batch of
  slice runs; a partition not built yet (or failed) does not hold back the others' rows.
- Both catch up once at their first evaluation (the automation's first tick, or the first
  after their condition changed) if they were never built: the conditions above see what
  happens from then on, and a mirror published before (`tol-dagster sync`, then `make dev`)
  would otherwise wait for the next resync. Only if never built: a restart with nothing
  changed must not cost a run (the command line brings what it publishes up to date itself).

Not `AutomationCondition.eager()`: it takes the target's own materialization as having used
every upstream update before it, and drops an update seen on the tick its reset is seen. That
loses a mirror published while the derived tables were being rebuilt from the generation
before (they read the generation pinned at their start), and a slice finished just after a
catalog run; and its "no dependency missing" would hold the catalog back while one declared
slice is unbuilt.

Which slices a generation touches is in the data, not in the graph: `mirror_change_sensor`
decides that (see `refresh`). The daemon evaluates these conditions through
`published_automation_sensor`, running by default: Dagster's own
`default_automation_condition_sensor` starts stopped, and nothing would follow the mirror until
someone turned it on in the UI.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from tol_dagster.defs.attempts import AUTOMATION_RUN_TAGS
from tol_dagster.defs.executors import of_every_config
from tol_dagster.defs.keys import asset_key, source_tags
from tol_dagster.defs.published.keys import derived_keys

AUTOMATION_SENSOR = "published_automation_sensor"

AC = dg.AutomationCondition


def _at_first_evaluation(ready: dg.AutomationCondition) -> dg.AutomationCondition:
    """True once, at the condition's first evaluation, if `ready` and nothing is in progress."""
    return (
        AC.initial_evaluation() & ready & ~AC.any_deps_in_progress() & ~AC.in_progress()
    ).with_label("catch_up_at_first_evaluation")


#: Reset by their request rather than by their materialization: they read the generation
#: pinned at their start, so a mirror that lands while they run requests them again. Not on a
#: tick that also sees the mirror updated: `newly_requested` is true the tick after the request
#: and carries no time, so `since` would let it win over a mirror published after the request
#: (the run may have read the generation before) and that generation would wait for the next
#: resync. An update seen with the reset keeps them due: at worst one more incremental run.
_REQUESTED_WITH_NOTHING_NEWER = (AC.newly_requested() & ~AC.any_deps_updated()).with_label(
    "requested_and_no_mirror_since"
)
DERIVED_CONDITION = (
    (
        AC.any_deps_updated().since(_REQUESTED_WITH_NOTHING_NEWER)
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("mirror_updated_since_requested")
    | _at_first_evaluation(AC.missing() & ~AC.any_deps_missing())
).with_label("after_each_mirror")

#: A slice partition materialized: a plain condition, so `since` can compare its time with
#: the reset's (it does only between two plain conditions).
_SLICE_BUILT = AC.any_deps_match(AC.newly_updated())

#: Reset by the catalog's materialization, times compared: a slice finished just after a
#: catalog run still counts. A failed catalog run resets too (separately: see `_SLICE_BUILT`),
#: so it waits for the next slice instead of being asked again every tick (the daemon's run
#: retries come first).
CATALOG_CONDITION = (
    (
        _SLICE_BUILT.since(AC.newly_updated())
        & _SLICE_BUILT.since(AC.execution_failed().newly_true())
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("slice_built_since_catalog")
    | _at_first_evaluation(AC.missing() & AC.any_deps_match(~AC.missing()))
).with_label("after_slices_built")


def automated_keys(config: str) -> list[dg.AssetKey]:
    """The assets of `config` that carry an automation condition."""
    return [*derived_keys(config), asset_key(config, "catalog")]


def build_automation_sensor(configs: Sequence[str]) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*of_every_config(configs, automated_keys)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        run_tags={**AUTOMATION_RUN_TAGS, **source_tags("sensor")},
        description=(
            "Evaluates the automation conditions of the derived tables (they follow a new "
            "mirror generation) and of the catalog (it follows the slices)."
        ),
    )

"""Declarative automation: what Dagster can see by itself after a new mirror generation.

- The derived tables follow the mirror: `AutomationCondition.eager()` requests them once the
  mirror was materialized (and, once, when they are missing while the mirror is not), never
  while the mirror or they are in progress. They are incremental per file, so a resync that
  published nothing new costs one short run.
- The catalog follows the slices: requested once a slice partition was materialized since it
  was last requested, when no slice run is in progress, so one catalog run follows a batch of
  slice runs. Unlike `eager()`, a missing partition (declared but not built yet, or failed)
  does not hold back the other slices' rows.

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
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.published.keys import derived_keys

AUTOMATION_SENSOR = "published_automation_sensor"

DERIVED_CONDITION = dg.AutomationCondition.eager()

CATALOG_CONDITION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after_slices_built")


def automated_keys(config: str) -> list[dg.AssetKey]:
    """The assets of `config` that carry an automation condition."""
    return [*derived_keys(config), asset_key(config, "catalog")]


def build_automation_sensor(configs: Sequence[str]) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(
            *[key for config in configs for key in automated_keys(config)]
        ),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        run_tags=AUTOMATION_RUN_TAGS,
        description=(
            "Evaluates the automation conditions of the derived tables (they follow a new "
            "mirror generation) and of the catalog (it follows the slices)."
        ),
    )

"""A sensor's cursor as the sensor wrote it. Dagster lets anyone set a sensor's cursor in the
UI; one that is not what the sensor writes would fail every tick, so the sensor starts over
instead (each sensor's first tick is safe: it compares upstream and the records with what is
published), says so, and writes its own cursor on that tick."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import dagster as dg


def read_cursor(
    context: dg.SensorEvaluationContext, valid: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The cursor's document; empty before the first tick, or when it is not a JSON object
    that `valid` accepts (a warning then names what was found)."""
    if not context.cursor:
        return {}
    try:
        cursor = json.loads(context.cursor)
    except ValueError:
        cursor = None
    if isinstance(cursor, dict) and valid(cursor):
        return cursor
    context.log.warning(
        f"the cursor {context.cursor[:200]!r} is not one this sensor writes (set by hand?): "
        "starting over from what is published; this tick writes its own"
    )
    return {}

"""Turn core results into what the Dagster UI shows: check results and table schemas."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

from tol_dagster.validation.checks import CheckResult


def check_result(result: CheckResult, asset: dg.AssetKey) -> dg.AssetCheckResult:
    """A core `CheckResult` as a Dagster check result; failures are ERROR (blocking)."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=result.check,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.message,
        metadata={"message": result.message, **_flat(result.details)},
    )


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    """An Arrow schema as the column list the UI renders."""
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def _flat(details: dict[str, Any]) -> dict[str, Any]:
    """Details as metadata values: scalars as is, anything else as JSON."""
    flat: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, bool | int | float | str) or value is None:
            flat[key] = value if value is not None else dg.MetadataValue.null()
        else:
            flat[key] = dg.MetadataValue.json(value)
    return flat

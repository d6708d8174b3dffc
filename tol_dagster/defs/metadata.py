"""Turn core results into what the Dagster UI shows: check results, table schemas, previews,
the owners every asset names, and links to each asset's code."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pyarrow as pa

from tol_dagster.validation.checks import CheckResult

OWNERS = ["team:imageomics"]


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


def blocking_checks(asset: dg.AssetKey, descriptions: Mapping[str, str]) -> list[dg.AssetCheckSpec]:
    """A blocking check on `asset` per name in `descriptions`: a failure stops what follows."""
    return [
        dg.AssetCheckSpec(check, asset=asset, blocking=True, description=description)
        for check, description in descriptions.items()
    ]


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    """An Arrow schema as the column list the UI renders."""
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def markdown_preview(table: pa.Table, limit: int = 10) -> str:
    """The first rows of a small table as markdown, for the UI."""
    rows = table.slice(0, limit).to_pylist()
    if not rows:
        return "(empty)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows
    ]
    return "\n".join(lines)


def with_code_references(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """`assets` with the file and line of each one's function, for the UI's code link: local
    paths, as the repository has no remote to link to (`dg.link_code_references_to_git` needs
    one). Dagster marks the feature beta; its warning would reach every command's stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        referenced = dg.with_source_code_references(assets)
    return [asset for asset in referenced if isinstance(asset, dg.AssetsDefinition)]


def _flat(details: dict[str, Any]) -> dict[str, Any]:
    """Details as metadata values: scalars as is, anything else as JSON."""
    flat: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, bool | int | float | str) or value is None:
            flat[key] = value if value is not None else dg.MetadataValue.null()
        else:
            flat[key] = dg.MetadataValue.json(value)
    return flat

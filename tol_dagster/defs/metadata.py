"""Turn core results into what the Dagster UI shows: check results, described column schemas,
table previews, sizes for people, links to upstream commits and to each asset's code, and the
owners every asset names."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pyarrow as pa

from tol_dagster.schema import column_description
from tol_dagster.store.disk import human_size
from tol_dagster.validation.checks import CheckResult

OWNERS = ["team:imageomics"]

#: Rows a table preview shows.
PREVIEW_ROWS = 20

#: How a preview writes a NULL cell.
NULL = "NULL"


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


def materialized_in_this_run(
    context: dg.AssetCheckExecutionContext, key: dg.AssetKey
) -> dg.AssetMaterialization | None:
    """`key`'s materialization by the check's own run, if this run made one: a check's depth
    follows whether it runs after its asset or alone (the audit job)."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.run_id != context.run.run_id:
        return None
    return event.asset_materialization


def blocking_checks(asset: dg.AssetKey, descriptions: Mapping[str, str]) -> list[dg.AssetCheckSpec]:
    """A blocking check on `asset` per name in `descriptions`: a failure stops what follows."""
    return [
        dg.AssetCheckSpec(check, asset=asset, blocking=True, description=description)
        for check, description in descriptions.items()
    ]


def table_schema(
    schema: pa.Schema, config: str, own: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """An Arrow schema as the column list the UI renders, each column described: by `own` (a
    table's own columns, `defs.columns`), else by the contract (`schema.column_description`)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                field.name, str(field.type), description=_describe(field.name, config, own or {})
            )
            for field in schema
        ]
    )


def _describe(name: str, config: str, own: Mapping[str, str]) -> str:
    described = own.get(name) or column_description(name, config)
    return described or "Not in the contract: a column upstream added (see the gate's checks)."


def table_preview(table: pa.Table, limit: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The first `limit` rows of `table` as a table the UI shows inline, NULL written `NULL`
    (a blank cell reads as "empty", and NULL buckets are real data here)."""
    rows = table.slice(0, limit).to_pylist()
    columns = [dg.TableColumn(field.name, str(field.type)) for field in table.schema]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in rows],
        schema=dg.TableSchema(columns=columns),
    )


def _cell(value: Any) -> str | float | bool:
    """A value as a preview cell: NULL as `NULL`, a count with thousands separators (the UI
    prints numbers raw), a struct as `a / b / NULL`, other scalars as they are."""
    if value is None:
        return NULL
    if isinstance(value, bool | float | str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return " / ".join(str(_cell(v)) for v in value.values())
    return str(value)


def with_size(key: str, size: int) -> dict[str, dg.MetadataValue]:
    """`key`'s raw byte count and, beside it, the size for people (`bytes` -> `size`,
    `bytes_fetched` -> `size_fetched`)."""
    return {
        key: dg.MetadataValue.int(size),
        key.replace("bytes", "size"): dg.MetadataValue.text(human_size(size)),
    }


def versioned_output(output: str, metadata: Mapping[str, Any], version: str) -> dg.Output[None]:
    """An asset's materialization from an op of its graph: its metadata and data version."""
    with warnings.catch_warnings():  # `data_version` on an Output is beta; the asset's is not
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(
            None, output_name=output, metadata=dict(metadata), data_version=dg.DataVersion(version)
        )


def worker_metadata() -> dict[str, dg.MetadataValue]:
    """Which worker ran a step: its host and process."""
    return {
        "worker_host": dg.MetadataValue.text(socket.gethostname()),
        "worker_pid": dg.MetadataValue.int(os.getpid()),
    }


def commit_url(endpoint: str, repo_id: str, commit: str) -> dg.UrlMetadataValue:
    """The Hub's page of upstream `commit` (`<endpoint>/datasets/<repo>/commit/<sha>`)."""
    return dg.MetadataValue.url(f"{endpoint.rstrip('/')}/datasets/{repo_id}/commit/{commit}")


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

"""The derived tables' audit check, `bytes_as_published` on each summary table, the taxon index
and the centroids of a config: the core's `derived.table_audit` as one Dagster op.

Each table is re-hashed against what its build recorded, after each build (the run that
materializes a table checks it) and in the audit job (the weekly schedule). Not blocking: it
reports drift in what readers already read; `mirror_change_sensor` and the command line rebuild
a drifted table (`drifted_tables`).
"""

from collections.abc import Iterator

import dagster as dg

from tol_dagster.defs.check_history import latest_evaluation
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key, op_name
from tol_dagster.defs.metadata import check_result
from tol_dagster.defs.resources import StorageResource
from tol_dagster.derived.table_audit import DERIVED_TABLES, TABLES_AUDIT_CHECK, audit_tables


def table_checks(config: str) -> dict[str, dg.AssetCheckKey]:
    """The audit check of each derived table of `config`, by table name."""
    return {
        table: dg.AssetCheckKey(asset_key(config, *table.split("/")), TABLES_AUDIT_CHECK)
        for table in DERIVED_TABLES
    }


def build_tables_audit_check(config: str) -> dg.AssetChecksDefinition:
    checks = table_checks(config)

    @dg.multi_asset_check(
        name=op_name(config, "derived_tables_audit"),
        specs=[
            dg.AssetCheckSpec(
                TABLES_AUDIT_CHECK,
                asset=check.asset_key,
                description=(
                    "The published table still holds the bytes its build recorded (bit rot, "
                    "hand edits, deletions): re-hashed after each build and weekly (audit_job)."
                ),
            )
            for check in checks.values()
        ],
        can_subset=True,
    )
    @in_words
    def derived_tables_audit(
        context: dg.AssetCheckExecutionContext, storage: StorageResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = context.selected_asset_check_keys
        tables = [table for table, check in checks.items() if check in selected]
        for table, result in audit_tables(storage.layout, config, tables).items():
            yield check_result(result, checks[table].asset_key)

    return derived_tables_audit


def drifted_tables(instance: dg.DagsterInstance, config: str) -> dict[str, int]:
    """The derived tables of `config` whose latest audit found drift, with that evaluation's
    id: a build writes them anew, and the check it runs after them then passes."""
    drifted = {}
    for table, check in table_checks(config).items():
        evaluation = latest_evaluation(instance, check)
        if evaluation is not None and not evaluation.passed:
            drifted[table] = evaluation.id
    return drifted

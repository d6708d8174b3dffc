"""The published slices' audit check, `slices_match_catalog` on each config's catalog: the
core's `slices.audit` as a Dagster check.

Two depths, as the mirror's audit: in a run that wrote the catalog, every slice it lists is
looked for and sized (a stat each); in the audit job (the weekly schedule) every one is
re-hashed. Not blocking: it reports drift (bit rot, hand edits, deletions) in what downstream
code already reads, naming each drifted slice with the command that builds it again.
"""

import dagster as dg

from tol_dagster.defs.check_history import Named, latest_named
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import check_result, materialized_in_this_run
from tol_dagster.defs.resources import StorageResource
from tol_dagster.slices.audit import DRIFTED_SLICES, SLICES_AUDIT_CHECK, audit_slices


def drifted_slices(instance: dg.DagsterInstance, config: str) -> Named | None:
    """The slices the latest evaluation of `config`'s `slices_match_catalog` found drifted
    (None: never evaluated): what `mirror_change_sensor` and `slices add-rank` build again."""
    check = dg.AssetCheckKey(asset_key(config, "catalog"), SLICES_AUDIT_CHECK)
    return latest_named(instance, check, DRIFTED_SLICES)


def build_slices_audit_check(name: str) -> dg.AssetChecksDefinition:
    catalog_key = asset_key(name, "catalog")

    @dg.asset_check(
        asset=catalog_key,
        name=SLICES_AUDIT_CHECK,
        description=(
            "Every slice the catalog lists still holds the bytes it gives (bit rot, hand edits, "
            "deletions). After the catalog is written: each present with its size; weekly "
            "(audit_job): each re-hashed."
        ),
    )
    @in_words
    def slices_match_catalog(
        context: dg.AssetCheckExecutionContext, storage: StorageResource
    ) -> dg.AssetCheckResult:
        rehash = materialized_in_this_run(context, catalog_key) is None
        return check_result(audit_slices(storage.layout, name, rehash=rehash), catalog_key)

    return slices_match_catalog

"""The mirror's audit check, `mirror_matches_manifest`: the core's `audit` as a Dagster check.

Two depths, so the check is always evaluated: in a resync's run, after `mirror` published, it
re-hashes the files just published (cheap: they were hashed while fetched); in the audit job
(the weekly schedule, running by default) it re-hashes every file and asks the Hub again. Not
blocking: it reports drift (bit rot, hand edits) on what is already published.
"""

import dagster as dg

from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import check_result, materialized_in_this_run
from tol_dagster.defs.mirror.keys import PUBLISHED_FILES
from tol_dagster.defs.resources import HubResource, StorageResource
from tol_dagster.hub.retry import QUICK_RETRY
from tol_dagster.resync import audit


def build_audit_check(name: str) -> dg.AssetChecksDefinition:
    mirror_key = asset_key(name, "mirror")

    @dg.asset_check(
        asset=mirror_key,
        name=audit.AUDIT_CHECK,
        description=(
            "Every published file still has the sha256 and size in the manifest, and upstream "
            "agrees (bit rot, hand edits). After each resync: the files it published; weekly "
            "(audit_job): every file."
        ),
    )
    @in_words
    def mirror_matches_manifest(
        context: dg.AssetCheckExecutionContext, hub: HubResource, storage: StorageResource
    ) -> dg.AssetCheckResult:
        published = _published_in_this_run(context, mirror_key)
        if published is not None:
            result = audit.audit(storage.layout, name, only=published)
        else:
            # Upstream is a note here (the upstream sensor follows it): offline, the audit says
            # "upstream not compared" after one quick retry, not after the patient policy's 31 s.
            result = audit.audit(storage.layout, name, client=hub.client(retry=QUICK_RETRY))
        return check_result(result, mirror_key)

    return mirror_matches_manifest


def _published_in_this_run(
    context: dg.AssetCheckExecutionContext, mirror_key: dg.AssetKey
) -> list[str] | None:
    """The files `mirror` published in this run (a resync's), or None (the audit job's run)."""
    materialization = materialized_in_this_run(context, mirror_key)
    if materialization is None:
        return None
    named = materialization.metadata.get(PUBLISHED_FILES)
    names = named.value if isinstance(named, dg.JsonMetadataValue) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

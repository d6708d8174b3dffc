"""The mirror's audit check, `mirror_matches_manifest`: the core's `audit` as a Dagster check.

Run by the audit job (the weekly schedule, off by default), not by every resync: it re-hashes
every published file and asks the Hub again. Not blocking: it reports drift (bit rot, hand
edits) on what is already published.
"""

import dagster as dg

from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.metadata import check_result
from tol_dagster.defs.resources import HubResource, StorageResource
from tol_dagster.resync import audit


def build_audit_check(name: str) -> dg.AssetChecksDefinition:
    mirror_key = asset_key(name, "mirror")

    @dg.asset_check(
        asset=mirror_key,
        name=audit.AUDIT_CHECK,
        description="Every published file still has the sha256 and size in the manifest, and upstream agrees (bit rot, hand edits).",
    )
    def mirror_matches_manifest(hub: HubResource, storage: StorageResource) -> dg.AssetCheckResult:
        return check_result(audit.audit(storage.layout, name, client=hub.client()), mirror_key)

    return mirror_matches_manifest

"""The mirror domain's names: its group, what one resync selects, where its run config goes."""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.resync.gate import GATE_CHECKS

#: The mirror's metadata naming the files a publish brought: what the audit that follows
#: a resync re-hashes.
PUBLISHED_FILES = "published_files"


def mirror_group(config: str) -> str:
    return f"mirror_{safe_name(config)}"


def resync_keys(config: str) -> list[dg.AssetKey]:
    """What one resync of `config` materializes (the staged asset carries the gate's checks)."""
    return [asset_key(config, name) for name in ("remote", "fetched", "staged", "mirror")]


def resync_check_keys(config: str) -> list[dg.AssetCheckKey]:
    """The checks a resync runs: the gate on `staged`, then the mirror's audit, which after a
    resync re-hashes only the files just published (the audit job re-hashes every file)."""
    gate = [dg.AssetCheckKey(asset_key(config, "staged"), name) for name in GATE_CHECKS]
    return [*gate, dg.AssetCheckKey(asset_key(config, "mirror"), AUDIT_CHECK)]

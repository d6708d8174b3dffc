"""The mirror domain's names: its group, what one resync selects, where its run config goes."""

from __future__ import annotations

import dagster as dg

from tol_dagster.defs.keys import asset_key, op_name, safe_name
from tol_dagster.resync.gate import GATE_CHECKS


def mirror_group(config: str) -> str:
    return f"mirror_{safe_name(config)}"


def resync_keys(config: str) -> list[dg.AssetKey]:
    """What one resync of `config` materializes (the staged asset carries the gate's checks)."""
    return [asset_key(config, "remote"), asset_key(config, "staged"), asset_key(config, "mirror")]


def resync_check_keys(config: str) -> list[dg.AssetCheckKey]:
    """The checks a resync runs: the gate on `staged`. Selecting `resync_keys` alone would add
    the mirror's audit, which re-hashes every published file and asks the Hub again: the
    audit schedule's job, not every resync's."""
    return [dg.AssetCheckKey(asset_key(config, "staged"), name) for name in GATE_CHECKS]


def staged_op_name(config: str) -> str:
    """The op that runs `tol/<config>/staged`: where a resync's run config goes."""
    return op_name(config, "staged")

"""Every job here runs in one process: the in-process executor, for jobs and the definitions.

A resync's lease (`defs.mirror.resync_slot`) is a resource held from the run's start to its
end, so `staged` and `mirror` must share a process; and the other jobs' steps run one after
another anyway, where a process per step costs more than the step itself on small work. The
definitions' default executor is the same, so the UI's Materialize (Dagster's implicit asset
job) and the runs the automation launches run in one process too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import dagster as dg

EXECUTOR = dg.in_process_executor


def in_process_job(
    name: str, selection: dg.AssetSelection, description: str
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job over `selection`, run in one process."""
    return dg.define_asset_job(
        name, selection=selection, description=description, executor_def=EXECUTOR
    )


def of_every_config(
    configs: Sequence[str], keys: Callable[[str], Iterable[dg.AssetKey]]
) -> list[dg.AssetKey]:
    """`keys(config)` of every config, in order: what a job over all configs selects."""
    return [key for config in configs for key in keys(config)]


def assets_job(
    name: str,
    configs: Sequence[str],
    keys: Callable[[str], Iterable[dg.AssetKey]],
    description: str,
) -> dg.UnresolvedAssetJobDefinition:
    """An in-process job materializing `keys(config)` of every config (each run selects some)."""
    return in_process_job(
        name, dg.AssetSelection.assets(*of_every_config(configs, keys)), description
    )

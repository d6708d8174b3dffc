"""What a new mirror generation asks of the published outputs, decided in one place for the
daemon and the command line.

The derived tables are current once the taxon index was built from the published generation
(`current_derived`). The slices to rebuild are then those whose taxa have rows in files that
changed since the previous index, plus declared slices never built (`plan_slice_refresh`);
declared slices that are not partitions yet become partitions (`declared_to_add`); whole ranks
are refreshed by one run each (`ranks_to_refresh`). In
`make dev` the automation builds the derived tables and the catalog and `mirror_change_sensor`
requests the slices; the command line's `refresh_published` (the demo) runs the same steps in
its own process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from tol_dagster.defs.published.partitions import slice_partition_keys
from tol_dagster.derived import built_from
from tol_dagster.slices import rebuilds, records
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest


def current_derived(layout: Layout, config: str) -> built_from.BuiltFrom | None:
    """What the taxon index was built from, when that is the published generation; None while
    the derived tables are behind the mirror (or nothing is published)."""
    manifest = load_manifest(layout, config)
    built = built_from.load_built_from(layout, config, "taxon_index")
    if manifest is None or built is None or built.generation != manifest.generation:
        return None
    return built


def declared_to_add(instance: dg.DagsterInstance, config: str, slices_file: Path) -> list[str]:
    """The slices `slices_file` declares for `config` that are not partitions yet, in order."""
    existing = set(slice_partition_keys(instance, config))
    return [key for key in rebuilds.declared_slices(slices_file, config) if key not in existing]


def ranks_to_refresh(layout: Layout, config: str, slices_file: Path) -> dict[str, int]:
    """The whole ranks to publish after a new generation, with their `min_rows`: those the
    slices file declares (its setting wins) and those published before (their last setting)."""
    ranks = records.published_ranks(layout, config)
    ranks.update({s.rank: s.min_rows for s in rebuilds.declared_ranks(slices_file, config)})
    return ranks


@dataclass(frozen=True)
class SliceRefresh:
    """The slices a generation asks to rebuild, among the `considered` partitions and
    declared slices, and the files that changed since the previous taxon index."""

    generation: str
    rebuild: list[str]
    changed_files: set[str]
    considered: int

    def describe(self, config: str) -> str:
        return (
            f"{config}: {len(self.changed_files)} files changed; "
            f"rebuilding {len(self.rebuild)} of {self.considered} slices"
        )


def plan_slice_refresh(
    instance: dg.DagsterInstance,
    layout: Layout,
    config: str,
    slices_file: Path,
    built: built_from.BuiltFrom,
) -> SliceRefresh:
    """The slices (partitions and declared ones) to rebuild for the generation of `built`."""
    keys = sorted(
        {*slice_partition_keys(instance, config), *rebuilds.declared_slices(slices_file, config)}
    )
    rebuild, changed = rebuilds.slices_to_rebuild(layout, config, keys, built)
    return SliceRefresh(built.generation, rebuild, changed, len(keys))

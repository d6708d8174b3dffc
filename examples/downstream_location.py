"""Another code location that builds on tol-dagster's published assets by their stable keys.

    dagster dev -f examples/downstream_location.py     (next to tol-dagster's own location)

The keys `tol/<config>/mirror`, `tol/<config>/slices`, `tol/<config>/catalog`,
`tol/<config>/summary/<name>` are a public contract: declaring them as specs here makes the
lineage cross locations in the UI, and the assets below read the published files through the
catalog API: the slices by key, the mirror through `mirror_files()` (one generation's paths,
so a resync publishing meanwhile cannot mix two commits into one count).
"""

from __future__ import annotations

import dagster as dg
import duckdb

from tol_dagster.catalog import list_slices, mirror_files

CONFIG = "bioclip-2_float16"
catalog_spec = dg.AssetSpec(key=["tol", CONFIG, "catalog"], description="Published by tol-dagster.")
mirror_spec = dg.AssetSpec(key=["tol", CONFIG, "mirror"], description="Published by tol-dagster.")


@dg.asset(deps=[catalog_spec], group_name="downstream")
def slice_inventory() -> dg.MaterializeResult:
    """How many images each published slice holds: a stand-in for a real training set build."""
    slices = list_slices(config=CONFIG)
    return dg.MaterializeResult(
        metadata={
            "slices": len(slices),
            "images": int(slices["rows"].sum()) if len(slices) else 0,
        }
    )


@dg.asset(deps=[mirror_spec], group_name="downstream")
def kingdom_counts() -> dg.MaterializeResult:
    """Images per kingdom over the whole mirror, from one generation's files."""
    paths = [str(path) for path in mirror_files(config=CONFIG)]
    rows = duckdb.read_parquet(paths).aggregate("kingdom, count(*)::BIGINT").fetchall()
    return dg.MaterializeResult(
        metadata={
            "files": len(paths),
            "images": sum(n for _, n in rows),
            "kingdoms": dg.MetadataValue.json({str(k): n for k, n in sorted(rows, key=str)}),
        }
    )


defs = dg.Definitions(assets=[catalog_spec, mirror_spec, slice_inventory, kingdom_counts])

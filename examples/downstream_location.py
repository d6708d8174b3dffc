"""Another code location that builds on tol-dagster's published assets by their stable keys.

    dagster dev -f examples/downstream_location.py     (next to tol-dagster's own location)

The keys `tol/<config>/slices`, `tol/<config>/catalog`, `tol/<config>/summary/<name>` are a
public contract: declaring them as specs here makes the lineage cross locations in the UI,
and the asset below reads the published files through the catalog API.
"""

from __future__ import annotations

import dagster as dg

from tol_dagster.catalog import list_slices

CONFIG = "bioclip-2_float16"
catalog_spec = dg.AssetSpec(key=["tol", CONFIG, "catalog"], description="Published by tol-dagster.")


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


defs = dg.Definitions(assets=[catalog_spec, slice_inventory])

"""The published domain of the Dagster layer: what is built from the published mirror.

The derived tables (summaries, taxon index, centroids), the slices (one dynamic partition per
slice key, each checked before its atomic publish), the catalog of slices, the alignment check
between configs; and what rebuilds them after a new mirror generation: automation conditions
for what Dagster sees by itself (`automation`), `mirror_change_sensor` for which slices a change
touches (`slice_sensor`), both planned by `refresh`, which the command line uses too.
`definitions.build_published_definitions` is its `dg.Definitions`.

May import any core layer and the shared modules of `tol_dagster.defs`, not `defs.mirror`
(its assets are named by key).
"""

"""The Dagster layer: thin wiring of the core into assets, checks, sensors, schedules and jobs.

Split by the core's domains, each building a small `dg.Definitions`: `mirror/` (the Hub's state,
staging behind the gate, the published mirror and its audit; resyncs, their serialization and
their triggers) and `published/` (derived tables, slices and their partitions, the catalog,
the alignment of configs, and what rebuilds them after a new mirror generation). They are
merged, with the resources, in one place: `tol_dagster.definitions`. Shared by both, here:
asset keys, resources, what the UI shows (`metadata`) and what our tables' columns mean
(`columns`), sensor request attempts, orphaned command-line runs, in-process jobs and the
Dagster instance.

May import every core layer (hub, store, settings, validation, resync, derived, slices,
catalog); nothing in the core imports it.
"""

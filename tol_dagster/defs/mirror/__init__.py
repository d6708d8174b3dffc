"""The mirror domain of the Dagster layer: upstream's state (`remote`), files staged behind the
validation gate (`staged`), the published mirror and its audit check; the resync, audit and
status jobs, the `adopt_<config>` jobs (`adoption`), the upstream sensor, the schedules, and
what keeps two resyncs of one config apart (`resync_slot`). `definitions.build_mirror_definitions`
is its `dg.Definitions`.

Wires `tol_dagster.resync` and the store to Dagster; may import any core layer and the shared
modules of `tol_dagster.defs`, not `defs.published`.
"""

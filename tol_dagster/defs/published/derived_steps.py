"""The derived tables' per-file work as Dagster steps, so that any executor can spread it.

Each derived table (summaries, taxon index, centroids) is a graph: `plan` pins the current
generation and cuts the files without a part yet into batches (`tol_dagster.batches`), one
`parts` step per batch writes those files' parts (cached by sha256 under `TOL_HOME`, which every
worker shares), and `publish` combines every file's part into the published table, atomically,
as one step. Steps pass small values only: the generation's name and file names. Each step
leases that generation again (`generations.pin_named`), so a resync published meanwhile changes
nothing a run reads, on whatever machine its steps run.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from tol_dagster.defs.batch_steps import batch_files, files_metadata, mirror_file_batches
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.defs.metadata import versioned_output, worker_metadata
from tol_dagster.defs.published.keys import published_group
from tol_dagster.defs.resources import STEP_IO, HubResource, StepsResource, StorageResource
from tol_dagster.derived import parts
from tol_dagster.store import generations
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration

#: Writes the parts of some files of a pinned generation; the names of the files it computed.
PartsWriter = Callable[[Sequence[MirrorFile], Layout, PinnedGeneration], tuple[str, ...]]


@dataclass(frozen=True)
class Publishing:
    """What a table's `publish` step hands its publisher: the pinned generation, the names of
    the files the `parts` steps computed, where to write and log, the Hub (commit links)."""

    pin: PinnedGeneration
    computed: frozenset[str]
    layout: Layout
    hub: HubResource
    log: Callable[[str], None]

    def files_computed(self, recomputed: Sequence[str]) -> int:
        """How many files' parts this run computed: in its `parts` steps, or at the publish
        (`recomputed`: files whose part was missing there)."""
        return len(self.computed | set(recomputed))


#: Publishes a table from every file's part; each output's metadata, by output name.
Publisher = Callable[[Publishing], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class DerivedSteps:
    """What makes one derived table's graph: its node name (the asset's op, unchanged from when
    it was one step), a short kind for its ops' names, its per-file part, and the two jobs."""

    node: str
    kind: str
    part: str
    write_parts: PartsWriter
    publish: Publisher


def build_derived_graph(
    config: str, table: DerivedSteps, outs: dict[str, dg.AssetOut]
) -> dg.AssetsDefinition:
    """The graph-backed asset(s) `outs` of `config`: plan, parts per batch, publish."""
    plan, write = _plan_op(config, table), _parts_op(config, table)
    publish = _publish_op(config, table, list(outs))

    @dg.graph_multi_asset(
        name=table.node,
        outs=outs,
        group_name=published_group(config),
        ins={"mirror": dg.AssetIn(asset_key(config, "mirror"), dagster_type=dg.Nothing)},
    )
    def derived(mirror):  # untyped: a Nothing input, from the AssetIn
        generation, batch = plan(mirror)
        published = publish(generation, batch.map(lambda files: write(generation, files)).collect())
        return published._asdict() if len(outs) > 1 else published

    return derived


def _plan_op(config: str, table: DerivedSteps) -> dg.OpDefinition:
    @dg.op(
        name=f"plan_{table.kind}_{safe_name(config)}",
        ins={"mirror": dg.In(dg.Nothing)},
        out={
            "generation": dg.Out(str, io_manager_key=STEP_IO),
            "batch": dg.DynamicOut(io_manager_key=STEP_IO),
        },
    )
    @in_words
    def plan(
        storage: StorageResource, steps: StepsResource
    ) -> Iterator[dg.Output[str] | dg.DynamicOutput[object]]:
        """Pin the current generation; one output per batch of files without a part."""
        layout = storage.layout
        with generations.pin_generation(layout, config) as pin:
            files = pin.mirror_files()
            stale = parts.stale_files(files, layout, config, table.part)
            batched = list(mirror_file_batches(stale, steps.policy()))  # sized in the lease
        yield dg.Output(
            pin.name, "generation", metadata={"files": len(files), "without_part": len(stale)}
        )
        yield from batched

    return plan


def _parts_op(config: str, table: DerivedSteps) -> dg.OpDefinition:
    @dg.op(
        name=f"parts_{table.kind}_{safe_name(config)}",
        ins={"generation": dg.In(str), "files": dg.In(dg.Any)},
        out=dg.Out(dg.Any, io_manager_key=STEP_IO),
    )
    @in_words
    def write(
        storage: StorageResource, generation: str, files: tuple[str, ...]
    ) -> dg.Output[tuple[str, ...]]:
        """Write the parts of one batch of files; which worker did it goes in the metadata."""
        layout = storage.layout
        with generations.pin_named(layout, config, generation) as pin:
            chosen = batch_files(pin, files)
            written = table.write_parts(chosen, layout, pin)
            read = files_metadata(chosen)
        return dg.Output(written, metadata={**worker_metadata(), **read})

    return write


def _publish_op(config: str, table: DerivedSteps, outputs: list[str]) -> dg.OpDefinition:
    @dg.op(
        name=f"publish_{table.kind}_{safe_name(config)}",
        ins={"generation": dg.In(str), "written": dg.In(dg.Any)},
        out={name: dg.Out(dg.Nothing) for name in outputs},
    )
    @in_words
    def publish(
        context: dg.OpExecutionContext,
        hub: HubResource,
        storage: StorageResource,
        generation: str,
        written: list[tuple[str, ...]],
    ) -> Iterator[dg.Output[None]]:
        """Combine every file's part into the published table(s), atomically."""
        with generations.pin_named(storage.layout, config, generation) as pin:
            computed = frozenset(name for batch in written for name in batch)
            published = table.publish(
                Publishing(pin, computed, storage.layout, hub, context.log.info)
            )
            for output, metadata in published.items():
                yield versioned_output(output, metadata, pin.name)

    return publish

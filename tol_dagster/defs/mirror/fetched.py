"""`tol/<config>/fetched`: the per-file work of a resync as Dagster steps, so that any executor
can spread it.

A graph: `plan` decides what to fetch (under the store's lock) and cuts it into batches
(`tol_dagster.batches`), one `fetch` step per batch downloads, verifies and inspects its files (the
gate's per-file facts, cached by sha256 under the store), and `conclude` gathers the batches
into the run's staged state. Steps pass small values only (names, paths, sha256s): the bytes
and the facts stay under `TOL_HOME`, which every worker shares. What `staged` then checks
across files, and the publish, stay single steps.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from tol_dagster.defs.batch_steps import batch_metadata, batch_outputs
from tol_dagster.defs.check_history import latest_named
from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.defs.metadata import OWNERS, commit_url, with_size, worker_metadata
from tol_dagster.defs.mirror.adoption import adopt_folder, adoption_metadata
from tol_dagster.defs.mirror.keys import mirror_group
from tol_dagster.defs.mirror.resync_slot import ResyncSlotResource, resync_pool
from tol_dagster.defs.mirror.run_config import FetchConfig, plan_op_name, requested_commit
from tol_dagster.defs.resources import STEP_IO, HubResource, StepsResource, StorageResource
from tol_dagster.hub.remote import RemoteFile
from tol_dagster.resync import audit, stage
from tol_dagster.resync.adopt_report import AdoptionReport


@dataclass(frozen=True)
class Planned:
    """What `plan` passes to every `fetch` and to `conclude`: small values only."""

    staging: stage.Staging
    adopted: AdoptionReport | None


def build_fetched_asset(name: str) -> dg.AssetsDefinition:
    """The graph-backed asset `tol/<name>/fetched`: plan, fetch per batch, conclude."""
    plan, fetch, conclude = _plan_op(name), _fetch_op(name), _conclude_op(name)

    @dg.graph_asset(
        key=asset_key(name, "fetched"),
        ins={"remote": dg.AssetIn(asset_key(name, "remote"), dagster_type=dg.Nothing)},
        group_name=mirror_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        description=(
            f"Files of `{name}` fetched for the upstream commit, verified (sha256) and inspected "
            "file by file (schema, rows, sort, emb scan and digests, expectations; cached by "
            "sha256), in batches of steps any executor can spread. Only files whose sha256 "
            "differs from the mirror's are fetched, and files the last audit found drifted "
            "(re-verified first)."
        ),
    )
    def fetched(remote):  # untyped: a Nothing input, from the AssetIn
        planned, batch = plan(remote)
        return conclude(planned, batch.map(lambda files: fetch(planned, files)).collect())

    return fetched


def _plan_op(name: str) -> dg.OpDefinition:
    mirror_key = asset_key(name, "mirror")

    @dg.op(
        name=plan_op_name(name),
        ins={"remote": dg.In(dg.Nothing)},  # read from the store: `remote` kept it
        out={
            "planned": dg.Out(io_manager_key=STEP_IO),
            "batch": dg.DynamicOut(io_manager_key=STEP_IO),
        },
        tags={"tol/stage": "download"},
        pool=resync_pool(name),
    )
    @in_words
    def plan(
        context: dg.OpExecutionContext,
        config: FetchConfig,
        hub: HubResource,
        storage: StorageResource,
        steps: StepsResource,
        resync_slot: ResyncSlotResource,  # held from the run's start to its end
    ) -> Iterator[dg.Output[object] | dg.DynamicOutput[object]]:
        """Adopt the user's folder if asked, plan, ready the staging; one output per batch."""
        commit = requested_commit(config)
        adopted = adopt_folder(
            storage.layout,
            hub.client(),
            name,
            config.adopt_from,
            config.adopt_copy,
            context.log.info,
        )
        staging = stage.prepare(
            storage.layout,
            hub.client(),
            name,
            commit=commit,
            suspects=_audit_suspects(context, mirror_key),
            log=context.log.info,
        )
        yield dg.Output(Planned(staging, adopted), "planned", metadata=worker_metadata())
        yield from batch_outputs(staging.plan.to_fetch, _size, steps.policy(), tuple)

    return plan


def _fetch_op(name: str) -> dg.OpDefinition:
    @dg.op(
        name=f"fetch_{safe_name(name)}",
        ins={"planned": dg.In(), "files": dg.In(dg.Any)},
        out=dg.Out(io_manager_key=STEP_IO),
        tags={"tol/stage": "download"},
    )
    @in_words
    def fetch(
        context: dg.OpExecutionContext,
        hub: HubResource,
        storage: StorageResource,
        planned: Planned,
        files: tuple[RemoteFile, ...],
    ) -> dg.Output[stage.Batch]:
        """Download, verify and inspect one batch; which worker did it goes in the metadata."""
        batch = stage.fetch_batch(
            storage.layout,
            hub.client(),
            planned.staging,
            files,
            max_parallel=hub.max_parallel_downloads,
            log=context.log.info,
        )
        return dg.Output(
            batch,
            metadata={**worker_metadata(), **batch_metadata(len(files), sum(map(_size, files)))},
        )

    return fetch


def _conclude_op(name: str) -> dg.OpDefinition:
    @dg.op(
        name=f"conclude_{safe_name(name)}",
        out=dg.Out(io_manager_key=STEP_IO),
        pool=resync_pool(name),
    )
    @in_words
    def conclude(
        context: dg.OpExecutionContext,
        hub: HubResource,
        storage: StorageResource,
        resync_slot: ResyncSlotResource,  # held since before this run's `plan`
        planned: Planned,
        fetched: list[stage.Batch],
    ) -> dg.Output[None]:
        """The run's staged state, from every batch; the fetch's figures as metadata."""
        state = stage.conclude(
            storage.layout,
            hub.client(),
            planned.staging,
            fetched,
            key=context.run.run_id,
            max_parallel=hub.max_parallel_downloads,
            log=context.log.info,
        )
        return dg.Output(
            None,
            metadata={
                "upstream_commit": commit_url(hub.endpoint, hub.repo_id, state.commit),
                "fetched": len(state.fetched),
                "failed": len(state.failed),
                "batches": len(fetched),
                **with_size("bytes_fetched", state.bytes_fetched),
                "download_mb_per_s": round(state.download_mb_per_s, 1),
                **(
                    adoption_metadata(planned.adopted.with_fetched(state))
                    if planned.adopted
                    else {}
                ),
            },
        )

    return conclude


def _size(remote_file: RemoteFile) -> int:
    return remote_file.size


def _audit_suspects(context: dg.OpExecutionContext, mirror_key: dg.AssetKey) -> list[str]:
    """The files the latest audit of the mirror found drifted, from Dagster's record of it:
    the resync re-hashes them and fetches again those still drifted (the audit writes nothing)."""
    check = dg.AssetCheckKey(mirror_key, audit.AUDIT_CHECK)
    named = latest_named(context.instance, check, audit.DRIFTED_FILES)
    return named.names if named is not None else []

"""Per-config mirror assets: remote -> fetched -> staged (gated by blocking checks) -> mirror.

The download (`fetched`, steps per batch of files: `defs.mirror.fetched`) is a staged state of
its own, so a failing check is recorded against the staged
version and never against the mirror consumers read; `mirror` only runs when every blocking
check on `staged` passed, and publishing is one atomic switch (see `tol_dagster.resync.publish`).
No `code_version` here: what these assets hold is upstream's bytes, which our code verifies
but does not shape.
"""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import HUB_RETRY_TAG, asset_key
from tol_dagster.defs.metadata import (
    OWNERS,
    blocking_checks,
    check_result,
    commit_url,
    table_schema,
    with_size,
)
from tol_dagster.defs.mirror.fetched import build_fetched_asset
from tol_dagster.defs.mirror.keys import PUBLISHED_FILES, mirror_group
from tol_dagster.defs.mirror.resync_slot import ResyncSlotResource, resync_pool
from tol_dagster.defs.mirror.run_config import StageConfig
from tol_dagster.defs.resources import GateResource, HubResource, StorageResource
from tol_dagster.errors import StoreError
from tol_dagster.hub.retry import QUICK_RETRY
from tol_dagster.resync import plan, publish, revision_diff
from tol_dagster.resync.gate import GATE_CHECKS, gate_refusal, run_gate
from tol_dagster.resync.state import StagedState, load_staged, refresh_remote, remote_version
from tol_dagster.schema import expected_schema
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest
from tol_dagster.store.staging import stage_path


def build_mirror_assets(name: str, freshness_days: int = 7) -> list[dg.AssetsDefinition]:
    """The remote, fetched, staged and mirror assets of config `name`; a mirror not published
    for `freshness_days` shows as stale."""
    return [
        build_remote_asset(name),
        build_fetched_asset(name),
        build_staged_asset(name),
        build_mirror_asset(name, freshness_days),
    ]


def build_remote_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "remote"),
        group_name=mirror_group(name),
        kinds={"huggingface"},
        owners=OWNERS,
        description=(
            f"The upstream state of config `{name}`: commit, files with size and sha256, the "
            "card's row count, and what the mirror lacked at the time of this check (not "
            "updated by a later publish: `mirror` says what is published)."
        ),
    )
    @in_words
    def remote(
        context: dg.AssetExecutionContext, hub: HubResource, storage: StorageResource
    ) -> dg.MaterializeResult:
        quick = context.run.tags.get(HUB_RETRY_TAG) == "quick"  # `status`: an answer soon
        state = refresh_remote(storage.layout, hub.client(QUICK_RETRY if quick else None), name)
        manifest = load_manifest(storage.layout, name)
        behind = plan.plan_sync(manifest, state)
        lacked = plan.lacked_at_check(manifest, behind)
        context.log.info(f"upstream {name} at {state.commit[:12]}: {lacked}")
        return dg.MaterializeResult(
            metadata={
                "upstream_commit": commit_url(hub.endpoint, hub.repo_id, state.commit),
                "files": len(state.files),
                **with_size("bytes", sum(f.size for f in state.files)),
                "card_expected_rows": state.expected_rows
                if state.expected_rows is not None
                else dg.MetadataValue.null(),
                "mirror_at_check": lacked,
                "files_lacked_at_check": len(behind.to_fetch) + len(behind.removed),
                "bytes_lacked_at_check": behind.bytes_to_fetch,
            },
            data_version=dg.DataVersion(remote_version(state)),
        )

    return remote


def _staged_description(name: str) -> str:
    return (
        f"The candidate generation of `{name}`: the files `fetched` staged for the upstream "
        "commit and the mirror's unchanged ones, behind the validation gate (the per-file "
        "facts `fetched` computed, combined with the checks across files). "
        "Kept per run: the run's `mirror` publishes what its own `staged` staged."
    )


def build_staged_asset(name: str) -> dg.AssetsDefinition:
    staged_key = asset_key(name, "staged")

    @dg.asset(
        key=staged_key,
        deps=[asset_key(name, "fetched")],
        group_name=mirror_group(name),
        kinds={"parquet"},
        owners=OWNERS,
        description=_staged_description(name),
        check_specs=blocking_checks(staged_key, GATE_CHECKS),
        pool=resync_pool(name),
    )
    @in_words
    def staged(
        context: dg.AssetExecutionContext,
        config: StageConfig,
        hub: HubResource,
        storage: StorageResource,
        gate: GateResource,
        resync_slot: ResyncSlotResource,  # held from the run's start to its end
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        state = load_staged(storage.layout, name, _staged_by(context, storage, name))
        if state is None:
            raise StoreError(
                f"{name}: nothing was staged by this run: materialize `fetched` with it "
                "(`tol-dagster sync` does)"
            )
        yield dg.MaterializeResult(
            metadata={
                "upstream_commit": commit_url(hub.endpoint, hub.repo_id, state.commit),
                "files": dg.MetadataValue.md(state.files_markdown()),
                "fetched": len(state.fetched),
                "failed": len(state.failed),
                "removed_upstream": len(state.removed),
                "rows": dg.MetadataValue.int(state.total_rows),
                "dagster/column_schema": table_schema(_staged_schema(storage.layout, state), name),
            },
            data_version=dg.DataVersion(state.version),
        )
        yield from _gate(storage, gate, config, state, staged_key)

    return staged


def _gate(
    storage: StorageResource,
    gate: GateResource,
    config: StageConfig,
    state: StagedState,
    staged_key: dg.AssetKey,
) -> Iterator[dg.AssetCheckResult]:
    """The gate's verdicts as `staged`'s checks; a refusal then fails the step in words."""
    results = run_gate(
        storage.layout,
        state,
        max_row_loss=gate.max_row_loss,
        accept_row_loss=config.accept_row_loss,
        accept_schema_change=config.accept_schema_change,
        accept_emb_change=config.accept_emb_change,
    )
    for result in results:
        yield check_result(result, staged_key)
    refused = [r for r in results if not r.passed]
    if refused:
        raise gate_refusal(state.config, state.commit, refused)


def build_mirror_asset(name: str, freshness_days: int) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(name, "mirror"),
        deps=[asset_key(name, "staged")],
        group_name=mirror_group(name),
        kinds={"parquet", "duckdb"},
        owners=OWNERS,
        description=(
            f"The published local mirror of `{name}`: `<TOL_HOME>/mirror/{name}/*.parquet` shows one "
            "validated upstream commit, whole. Stale when no resync published for "
            f"{freshness_days} days (TOL_FRESHNESS_DAYS)."
        ),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=freshness_days)),
        pool=resync_pool(name),
    )
    @in_words
    def mirror(
        context: dg.AssetExecutionContext,
        hub: HubResource,
        storage: StorageResource,
        resync_slot: ResyncSlotResource,  # held since before this run's `staged`
    ) -> dg.MaterializeResult:
        key = _staged_by(context, storage, name)
        published = publish.publish(storage.layout, name, key=key, log=context.log.info)
        diff = revision_diff.record_revision_diff(storage.layout, name, published)
        return dg.MaterializeResult(
            metadata={
                "upstream_commit": commit_url(hub.endpoint, hub.repo_id, published.commit),
                "generation": published.generation,
                "path": dg.MetadataValue.path(str(storage.layout.mirror_dir(name))),
                "files": len(published.manifest.entries),
                "rows": dg.MetadataValue.int(published.manifest.total_rows),
                **with_size("bytes", published.total_bytes),
                "changes": dg.MetadataValue.md(published.changes_markdown()),
                PUBLISHED_FILES: dg.MetadataValue.json(list(published.fetched)),
                "rows_by_taxon": dg.MetadataValue.md(
                    revision_diff.describe_change(published, diff)
                ),
                "dagster/column_schema": table_schema(
                    published.manifest.schema or expected_schema(name), name
                ),
                "dagster/row_count": dg.MetadataValue.int(published.manifest.total_rows),
            },
            data_version=dg.DataVersion(published.commit),
        )

    return mirror


def _staged_schema(layout: Layout, state: StagedState) -> pa.Schema:
    """The schema of a file this run fetched (a footer read), else the contract's: what the
    gate checks the staged files against."""
    fetched = [stage_path(layout, state.config, state.commit, f.name) for f in state.fetched]
    found = [path for path in fetched if path.is_file()]
    return pq.read_schema(found[0]) if found else expected_schema(state.config)


def _staged_by(context: dg.AssetExecutionContext, storage: StorageResource, config: str) -> str:
    """The run whose staged state this run publishes: its own, or, when it re-executes only
    `mirror` from a failed run, the run it re-executes (Dagster's parent and root run)."""
    run = context.run
    for key in (run.run_id, run.parent_run_id, run.root_run_id):
        if key and load_staged(storage.layout, config, key) is not None:
            return key
    return run.run_id  # publish says that nothing is staged by this run

"""The command line's runs, executed through Dagster so they appear in the UI's run history.

Each command runs the job in this process against the persistent instance (DAGSTER_HOME) and
maps the outcome to the public exit codes: 0 done, 1 the gate refused, 2 bad input or
settings, 3 upstream unreachable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import dagster as dg

from tol_dagster import catalog, errors, published, sync
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.jobs import (
    CATALOG_JOB,
    DERIVED_JOB,
    RESYNC_JOB,
    STATUS_JOB,
    resync_run_tags,
    slices_job_name,
)
from tol_dagster.defs.keys import (
    asset_key,
    derived_keys,
    resync_check_keys,
    resync_keys,
    slices_partitions_name,
    staged_op_name,
)
from tol_dagster.errors import SettingsError, SliceSpecError
from tol_dagster.instance import open_instance
from tol_dagster.manifest import load_manifest
from tol_dagster.runs import cli_run_tags, live_resync_runs
from tol_dagster.settings import Settings
from tol_dagster.slice_keys import parse_slice_key

WAIT_FOR_OTHER_RUN_S = 2.0
#: The terminal shows our progress lines and warnings, not Dagster's step-by-step debug events
#: (the UI keeps the full event log).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def select_configs(settings: Settings, config: str | None) -> tuple[str, ...]:
    if config is None:
        return settings.configs
    if config not in settings.configs:
        raise SettingsError(
            f"--config {config!r} is not configured; TOL_CONFIGS={','.join(settings.configs)} "
            f"(add it there to mirror it)"
        )
    return (config,)


def exit_code(result: dg.ExecuteInProcessResult) -> tuple[int, list[str]]:
    """The public exit code of a run, with the lines that explain it."""
    refused = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if result.success and not refused:
        return 0, []
    lines = [f"check {e.check_name} failed: {e.description}" for e in refused]
    code = 1 if refused else 0
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        error = event.step_failure_data.error if event.step_failure_data else None
        while (
            error is not None
            and error.cause is not None
            and str(error.cls_name).startswith("Dagster")
        ):
            error = error.cause
        if error is None or error.cls_name == "DagsterAssetCheckFailedError":
            continue  # already explained by the failed checks above
        error_class = getattr(errors, str(error.cls_name), None)
        step_code = (
            error_class.exit_code
            if isinstance(error_class, type) and issubclass(error_class, errors.TolError)
            else 1
        )
        code = max(code, step_code)
        lines.append(f"{event.step_key}: {error.message.strip()}")
    return (code or 1), lines


def run_sync(
    *,
    config: str | None,
    accept_row_loss: bool,
    accept_schema_change: bool,
    accept_emb_change: bool = False,
) -> int:
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(RESYNC_JOB)
    worst = 0
    for name in configs:
        _wait_for_other_resyncs(instance, name)
        subset = job.get_subset(
            asset_selection=set(resync_keys(name)),
            asset_check_selection=set(resync_check_keys(name)),
        )
        result = subset.execute_in_process(
            run_config={
                **QUIET_LOGS,
                "ops": {
                    staged_op_name(name): {
                        "config": {
                            "accept_row_loss": accept_row_loss,
                            "accept_schema_change": accept_schema_change,
                            "accept_emb_change": accept_emb_change,
                        }
                    }
                },
            },
            instance=instance,
            tags={**resync_run_tags(name, None), **cli_run_tags()},
            raise_on_error=False,
        )
        code, lines = exit_code(result)
        _report_sync(settings, name, result.run_id, code, lines)
        worst = max(worst, code)
    return worst


def _wait_for_other_resyncs(instance: dg.DagsterInstance, config: str) -> None:
    """Two resyncs of one config never run at once: wait for one the daemon is running."""
    announced = False
    while runs := live_resync_runs(instance, config):
        if not announced:
            print(
                f"waiting for resync run {runs[0].run_id} of {config} to finish…", file=sys.stderr
            )
            announced = True
        time.sleep(WAIT_FOR_OTHER_RUN_S)


def _report_sync(
    settings: Settings, config: str, run_id: str, code: int, lines: Sequence[str]
) -> None:
    manifest = load_manifest(settings.layout, config)
    out = sys.stdout if code == 0 else sys.stderr
    if code == 0 and manifest is not None:
        print(
            f"{config}: mirror at {manifest.upstream_commit[:12]} ({len(manifest.entries)} files, "
            f"{manifest.total_rows:,} rows) in {settings.layout.mirror_dir(config)} [run {run_id}]",
            file=out,
        )
    else:
        verdict = {
            1: "the gate refused the new state",
            2: "bad input or settings",
            3: "upstream unreachable",
        }.get(code, "failed")
        print(
            f"{config}: {verdict}; the mirror keeps its last validated generation [run {run_id}]",
            file=out,
        )
        for line in lines:
            print(f"  {line}", file=out)


def status_report(settings: Settings) -> dict[str, dict[str, object]]:
    """Per config: upstream as last observed, the published mirror, and what a sync would do."""
    report: dict[str, dict[str, object]] = {}
    for config in settings.configs:
        layout = settings.layout
        manifest = load_manifest(layout, config)
        remote = sync.load_remote(layout, config)
        entry: dict[str, object] = {
            "mirror_path": str(layout.mirror_dir(config)),
            "mirror_commit": manifest.upstream_commit if manifest else None,
            "mirror_files": len(manifest.entries) if manifest else 0,
            "mirror_rows": manifest.total_rows if manifest else 0,
            "validated_at": manifest.validated_at if manifest else None,
            "upstream_commit": remote.commit if remote else None,
            "upstream_expected_rows": remote.expected_rows if remote else None,
        }
        entry["last_change"] = sync.last_revision_diff(layout, config)
        if remote is not None:
            decision = sync.decide(layout, remote)
            entry["in_sync"] = not decision.needs_run
            entry["pending"] = decision.reason
        report[config] = entry
    return report


def run_status(*, as_json: bool) -> int:
    settings = Settings.from_env()
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(STATUS_JOB)
    result = job.execute_in_process(
        run_config=QUIET_LOGS, instance=instance, tags=cli_run_tags(), raise_on_error=False
    )
    code, lines = exit_code(result)
    report = status_report(settings)
    if as_json:
        print(json.dumps({"exit_code": code, "errors": lines, "configs": report}, indent=1))
    else:
        for config, entry in report.items():
            print(f"{config}:")
            for key, value in entry.items():
                print(f"  {key}: {_short(value) if key == 'last_change' else value}")
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
    return code


def _short(change: object) -> str:
    """The last published change by uuid, in one line (`--json` has the per-taxon table)."""
    if not isinstance(change, dict):
        return "none recorded"
    top = ", ".join(
        f"{t.get('species') or t.get('genus') or t.get('family') or '?'} +{t['added']}/-{t['removed']}"
        for t in change.get("taxa", [])[:5]
    )
    return (
        f"{str(change['from_commit'])[:12]} -> {str(change['to_commit'])[:12]}: "
        f"+{change['added']:,} / -{change['removed']:,} rows by uuid in {change['taxa_changed']:,} taxa"
        + (f" (most: {top})" if top else "")
    )


def _one_config(settings: Settings, config: str | None) -> str:
    """`--config`, or the first of TOL_CONFIGS."""
    return select_configs(settings, config)[0]


def _print_failure(code: int, lines: Sequence[str]) -> None:
    for line in lines:
        print(f"  {line}", file=sys.stderr)


def _ensure_derived(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: Settings, name: str
) -> int:
    """Summaries, index and centroids for the current mirror generation (a run only if stale)."""
    manifest, _ = published.mirror_inputs(settings.layout, name)
    built = published.load_built_from(settings.layout, name, "taxon_index")
    if built is not None and built.generation == manifest.generation:
        return 0
    print(f"{name}: building summaries, taxon index and centroids of the mirror…", file=sys.stderr)
    result = defs.resolve_job_def(DERIVED_JOB).execute_in_process(
        run_config=QUIET_LOGS,
        instance=instance,
        asset_selection=derived_keys(name),
        tags=cli_run_tags(),
        raise_on_error=False,
    )
    code, lines = exit_code(result)
    _print_failure(code, lines)
    return code


def _build_slice(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, key: str) -> int:
    instance.add_dynamic_partitions(slices_partitions_name(name), [key])
    result = defs.resolve_job_def(slices_job_name(name)).execute_in_process(
        run_config=QUIET_LOGS,
        instance=instance,
        partition_key=key,
        tags=cli_run_tags(),
        raise_on_error=False,
    )
    code, lines = exit_code(result)
    if code:
        print(
            f"slice {key}: not published; the previous file (if any) is unchanged", file=sys.stderr
        )
        _print_failure(code, lines)
    return code


def run_slice(key_text: str, *, config: str | None) -> int:
    """Materialize one slice through Dagster (adding its partition), refresh the catalog."""
    settings = Settings.from_env()
    key = parse_slice_key(key_text)
    name = _one_config(settings, config)
    published.mirror_inputs(settings.layout, name)  # no mirror: say so before touching anything
    instance = open_instance(settings)
    defs = build_definitions(settings)
    code = _ensure_derived(defs, instance, settings, name) or _build_slice(
        defs, instance, name, key.name
    )
    if code:
        return code
    code = _refresh_catalog(defs, instance, name)
    print(settings.layout.slices_dir(name) / key.file_name)
    return code


def refresh_published(settings: Settings, name: str) -> int:
    """What `mirror_change_sensor` does, in this process: derived outputs, affected slices, catalog."""
    instance = open_instance(settings)
    defs = build_definitions(settings)
    code = _ensure_derived(defs, instance, settings, name)
    if code:
        return code
    layout = settings.layout
    declared = published.declared_slices(settings.slices_file, name)
    existing = instance.get_dynamic_partitions(slices_partitions_name(name))
    built = published.load_built_from(layout, name, "taxon_index")
    assert built is not None
    todo, _ = published.slices_to_rebuild(layout, name, sorted({*declared, *existing}), built)
    for key in todo:
        code = max(code, _build_slice(defs, instance, name, key))
    return max(code, _refresh_catalog(defs, instance, name))


def _refresh_catalog(defs: dg.Definitions, instance: dg.DagsterInstance, config: str) -> int:
    result = defs.resolve_job_def(CATALOG_JOB).execute_in_process(
        run_config=QUIET_LOGS,
        instance=instance,
        asset_selection=[asset_key(config, "catalog")],
        tags=cli_run_tags(),
        raise_on_error=False,
    )
    code, lines = exit_code(result)
    _print_failure(code, lines)
    return code


def list_slices_command(*, config: str | None) -> int:
    settings = Settings.from_env()
    if config is not None:
        select_configs(settings, config)
    table = catalog.list_slices(config=config, home=settings.home)
    if table.empty:
        print(
            "no slices published yet; build one with `tol-dagster slice KEY` (e.g. family=Felidae)"
        )
        return 0
    for row in table.to_dict("records"):
        print(
            f"{row['config']}\t{row['name']}\t{int(row['rows']):,} rows\t{int(row['bytes']) / 1e6:,.1f} MB\t{row['path']}"
        )
    return 0


def remove_slice_command(key_text: str, *, config: str | None) -> int:
    """Remove a slice: its partition, its file and its catalog row (the catalog is rewritten)."""
    settings = Settings.from_env()
    key = parse_slice_key(key_text)
    name = _one_config(settings, config)
    layout = settings.layout
    instance = open_instance(settings)
    partitions = slices_partitions_name(name)
    known = instance.has_dynamic_partition(partitions, key.name)
    path = layout.slices_dir(name) / key.file_name
    if not known and not path.exists():
        raise SliceSpecError(
            f"slice {key.name} of {name} does not exist; `tol-dagster slices list` shows the slices"
        )
    if known:
        instance.delete_dynamic_partition(partitions, key.name)
    path.unlink(missing_ok=True)
    published.remove_slice_record(layout, name, key.name)
    code = _refresh_catalog(build_definitions(settings), instance, name)
    print(f"removed {key.name} from {name}")
    return code

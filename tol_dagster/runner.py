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

from tol_dagster import errors, sync
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.jobs import RESYNC_JOB, STATUS_JOB, resync_run_tags
from tol_dagster.defs.keys import resync_keys, staged_op_name
from tol_dagster.errors import SettingsError
from tol_dagster.instance import open_instance
from tol_dagster.manifest import load_manifest
from tol_dagster.runs import cli_run_tags, live_resync_runs
from tol_dagster.settings import Settings

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


def run_sync(*, config: str | None, accept_row_loss: bool, accept_schema_change: bool) -> int:
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(RESYNC_JOB)
    worst = 0
    for name in configs:
        _wait_for_other_resyncs(instance, name)
        result = job.execute_in_process(
            run_config={
                **QUIET_LOGS,
                "ops": {
                    staged_op_name(name): {
                        "config": {
                            "accept_row_loss": accept_row_loss,
                            "accept_schema_change": accept_schema_change,
                        }
                    }
                },
            },
            instance=instance,
            asset_selection=resync_keys(name),
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
                print(f"  {key}: {value}")
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
    return code

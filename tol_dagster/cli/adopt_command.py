"""`tol-dagster adopt PATH`: turn a copy the user already has into a verified, gated mirror.

Each config runs one resync in this process (`cli.runner`) whose `staged` step first adopts
PATH (`defs.mirror.adoption`), as the UI's `adopt_<config>` job does, so the run shows the
adoption report in its metadata and the command prints that same report (with `--json`, in its
one JSON document). Exit codes as for `sync`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.execution.execution_result import ExecutionResult

from tol_dagster import errors
from tol_dagster.cli import progress_view, report, verbosity
from tol_dagster.cli.config_option import select_configs
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.cli.sync_command import _report_failure as report_failure
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.adoption import REPORT_KEY, stage_run_config
from tol_dagster.defs.mirror.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys, staged_op_name
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.orphaned_runs import fail_dead_cli_runs
from tol_dagster.resync.adopt_report import AdoptionReport
from tol_dagster.settings import Settings


def run_adopt(path: Path, *, config: str | None, copy: bool) -> int:
    """Adopt `path` for each selected config, each in its own run; the worst exit code."""
    source = path.expanduser().absolute()
    if not source.is_dir():
        raise errors.SettingsError(
            f"{path} is not a folder; give the folder `hf download --local-dir` wrote "
            "(e.g. ./data), or any folder holding the config's parquet files"
        )
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    instance = open_instance(settings)
    job = load_code_location(settings).resolve_job_def(RESYNC_JOB)
    ensure_resync_pools(instance, settings.configs)
    done: dict[str, dict[str, Any]] = {}
    for name in configs:
        fail_dead_cli_runs(instance, name)
        started = time.monotonic()
        with progress_view.shown(f"adopt {name}"):
            result = execute(
                job,
                asset_selection=resync_keys(name),
                asset_check_selection=resync_check_keys(name),
                run_config={
                    "ops": {staged_op_name(name): {"config": stage_run_config(str(source), copy)}}
                },
                instance=instance,
                tags=resync_run_tags(name, None),
            )
        code, lines = exit_code(result)
        facts = report.sync_facts(settings, name, result.run_id, code, time.monotonic() - started)
        adoption = _report_of(result, name)
        done[name] = {**facts, "errors": lines, "adoption": adoption}
        for line in AdoptionReport.from_dict(adoption).lines() if adoption else []:
            report.say(line)
        if code:
            report_failure(name, result.run_id, code, lines)
        else:
            report.sync_report(name, facts)
    worst = max(f["exit_code"] for f in done.values())
    if verbosity.as_json():
        failures = [f"{name}: {line}" for name, f in done.items() for line in f["errors"]]
        report.print_document("adopt", worst, failures, source=str(source), configs=done)
    return worst


def _report_of(result: ExecutionResult, config: str) -> dict[str, Any] | None:
    """The adoption report the run's `staged` step recorded (None: it failed before that)."""
    for materialization in result.asset_materializations_for_node(staged_op_name(config)):
        value = materialization.metadata.get(REPORT_KEY)
        if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict):
            return value.value
    return None

"""`tol-dagster adopt PATH`: turn a copy the user already has into a verified, gated mirror.

Each config runs its `adopt_<config>` job in this process (`cli.runner`), so the adoption shows
in the UI's run history with its report in metadata; the command prints that same report (or,
with `--json`, one JSON document of every config's). Exit codes as for `sync`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from tol_dagster import errors
from tol_dagster.cli.config_option import select_configs
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.cli.sync_command import _report_sync as report_sync
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.adoption import REPORT_KEY, adopt_job_name
from tol_dagster.defs.mirror.keys import staged_op_name
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.orphaned_runs import cli_run_tags, fail_dead_cli_runs
from tol_dagster.resync.adopt_report import AdoptionReport
from tol_dagster.settings import Settings
from tol_dagster.store.manifest import load_manifest


def run_adopt(path: Path, *, config: str | None, copy: bool, as_json: bool) -> int:
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
    defs = build_definitions(settings)
    ensure_resync_pools(instance, settings.configs)
    worst, documents = 0, []
    for name in configs:
        fail_dead_cli_runs(instance, name)
        result = execute(
            defs.resolve_job_def(adopt_job_name(name)),
            run_config={"path": str(source), "copy": copy},
            instance=instance,
            tags=cli_run_tags(),
        )
        code, lines = exit_code(result)
        report = _report_of(result, name)
        if as_json:
            documents.append(_document(settings, name, result.run_id, code, lines, report))
        else:
            _print_report(report)
            report_sync(settings, name, result.run_id, code, lines)
        worst = max(worst, code)
    if as_json:
        print(json.dumps({"exit_code": worst, "configs": documents}, indent=1))
    return worst


def _report_of(result: dg.ExecuteInProcessResult, config: str) -> dict[str, Any] | None:
    """The adoption report the run's `staged` step recorded (None: it failed before that)."""
    for materialization in result.asset_materializations_for_node(staged_op_name(config)):
        value = materialization.metadata.get(REPORT_KEY)
        if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict):
            return value.value
    return None


def _print_report(report: dict[str, Any] | None) -> None:
    if report is not None:
        print("\n".join(AdoptionReport.from_dict(report).lines()))


def _document(
    settings: Settings,
    config: str,
    run_id: str,
    code: int,
    lines: list[str],
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    manifest = load_manifest(settings.layout, config) if code == 0 else None
    return {
        "config": config,
        "run_id": run_id,
        "exit_code": code,
        "errors": lines,
        "mirror": str(settings.layout.mirror_dir(config)) if manifest else None,
        "mirror_commit": manifest.upstream_commit if manifest else None,
        "report": report,
    }

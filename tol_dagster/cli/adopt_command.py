"""`tol-dagster adopt PATH`: turn a copy the user already has into a verified, gated mirror.

Each config runs one resync in this process (`cli.runner`) whose `staged` step first adopts
PATH (`defs.mirror.adoption`), as the UI's `adopt_<config>` job does, so the run shows the
adoption report in its metadata and the command prints that same report (with `--json`, in its
one JSON document). Exit codes as for `sync`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.execution.execution_result import ExecutionResult

from tol_dagster import errors
from tol_dagster.cli import report
from tol_dagster.cli.sync_command import run_resyncs
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.mirror.adoption import REPORT_KEY, stage_run_config
from tol_dagster.resync.adopt_report import AdoptionReport


def run_adopt(path: Path, *, config: str | None, copy: bool) -> int:
    """Adopt `path` for each selected config, each in its own run; the worst exit code."""
    source = path.expanduser().absolute()
    if not source.is_dir():
        raise errors.SettingsError(
            f"{path} is not a folder; give the folder `hf download --local-dir` wrote "
            "(e.g. ./data), or any folder holding the config's parquet files"
        )
    return run_resyncs(
        "adopt", config, stage_run_config(str(source), copy), _adoption, source=str(source)
    )


def _adoption(config: str, result: ExecutionResult) -> dict[str, Any]:
    """The adoption report of `config`'s run, printed (before the mirror's report) and kept
    in the command's facts."""
    adoption = _report_of(result, config)
    for line in AdoptionReport.from_dict(adoption).lines() if adoption else []:
        report.say(line)
    return {"adoption": adoption}


def _report_of(result: ExecutionResult, config: str) -> dict[str, Any] | None:
    """The adoption report the run's `fetched` recorded (None: it failed before that)."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key != asset_key(config, "fetched"):
            continue
        value = materialization.metadata.get(REPORT_KEY)
        if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict):
            return value.value
    return None

"""`tol-dagster sync`: resync each config's mirror through Dagster, then say what happened.

One run per config, each in this process (`cli.runner`), so a sync shows in the UI's run
history like a sensor's. The first line of a failure names the cause and the fix; the mirror
keeps its last validated generation whatever the outcome.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster._core.execution.execution_result import ExecutionResult

from tol_dagster import exit_codes
from tol_dagster.cli import progress_view, report, verbosity
from tol_dagster.cli.config_option import select_configs
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.defs.orphaned_runs import fail_dead_runs
from tol_dagster.settings import Settings


def run_sync(
    *,
    config: str | None,
    accept_row_loss: bool,
    accept_schema_change: bool,
    accept_emb_change: bool = False,
) -> int:
    """Resync each selected config in its own run; the worst exit code of them.

    The `accept_*` switches override the gate for this run only (the staged asset's config).
    On a terminal each run shows a progress bar, then a short report (`cli.report`)."""
    accepted = {
        "accept_row_loss": accept_row_loss,
        "accept_schema_change": accept_schema_change,
        "accept_emb_change": accept_emb_change,
    }
    return run_resyncs("sync", config, accepted)


#: What a command adds to a config's facts from its run (and prints before the report).
Extra = Callable[[str, ExecutionResult], dict[str, Any]]


def run_resyncs(
    command: str,
    config: str | None,
    stage_config: Mapping[str, Any],
    extra: Extra | None = None,
    **document: Any,
) -> int:
    """One resync run per selected config with `stage_config` as its run config
    values (`defs.mirror.run_config`), each
    reported as `sync` reports (`extra` adds to its facts); the worst exit code. With `--json`,
    one document with `document`'s fields and each config's facts."""
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    instance = open_instance(settings)
    job = load_code_location(settings).resolve_job_def(RESYNC_JOB)
    ensure_resync_pools(instance, settings.configs)
    # A killed run would hold its config's pool in the queue: mark it failed. Two resyncs
    # never overlap: the run waits for the config's lease (tol_dagster.defs.mirror.resync_slot).
    fail_dead_runs(instance)
    done: dict[str, dict[str, Any]] = {}
    for name in configs:
        started = time.monotonic()
        with progress_view.shown(f"{command} {name}"):
            result = execute(
                job,
                asset_selection=resync_keys(name),
                asset_check_selection=resync_check_keys(name),
                run_config=resync_run_config(name, **stage_config),
                instance=instance,
                tags=resync_run_tags(name, None),
            )
        code, lines = exit_code(result)
        facts = report.sync_facts(settings, name, result.run_id, code, time.monotonic() - started)
        done[name] = {**facts, "errors": lines, **(extra(name, result) if extra else {})}
        if code:
            _report_failure(name, result.run_id, code, lines)
        else:
            report.sync_report(name, facts)
    worst = max(f["exit_code"] for f in done.values())
    if verbosity.as_json():
        errors = [f"{name}: {line}" for name, f in done.items() for line in f["errors"]]
        report.print_document(command, worst, errors, **document, configs=done)
    return worst


def _report_failure(config: str, run_id: str, code: int, lines: Sequence[str]) -> None:
    """On stderr, whatever the verbosity: the cause first, then the verdict, then the rest."""
    verdict = exit_codes.VERDICTS.get(code, "failed")
    cause, *more = [*lines, verdict]
    print(f"tol-dagster: {config}: {cause}", file=sys.stderr)  # the first line: cause and fix
    print(
        f"{config}: {verdict}; the mirror keeps its last validated generation [run {run_id}]",
        file=sys.stderr,
    )
    for line in more[:-1]:
        print(f"  {line}", file=sys.stderr)

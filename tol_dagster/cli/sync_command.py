"""`tol-dagster sync`: resync each config's mirror through Dagster, then say what happened.

One run per config, each in this process (`cli.runner`), so a sync shows in the UI's run
history like a sensor's. The first line of a failure names the cause and the fix; the mirror
keeps its last validated generation whatever the outcome.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tol_dagster import errors
from tol_dagster.cli.config_option import select_configs
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys, staged_op_name
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.orphaned_runs import fail_dead_cli_runs
from tol_dagster.settings import Settings
from tol_dagster.store.manifest import load_manifest


def run_sync(
    *,
    config: str | None,
    accept_row_loss: bool,
    accept_schema_change: bool,
    accept_emb_change: bool = False,
) -> int:
    """Resync each selected config in its own run; the worst exit code of them.

    The `accept_*` switches override the gate for this run only (the staged asset's config)."""
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    instance = open_instance(settings)
    job = load_code_location(settings).resolve_job_def(RESYNC_JOB)
    ensure_resync_pools(instance, settings.configs)
    worst = 0
    for name in configs:
        # A killed sync's run would hold the config's pool in the queue: mark it failed. Two
        # resyncs never overlap: the run waits for the config's lease (tol_dagster.defs.mirror.resync_slot).
        fail_dead_cli_runs(instance, name)
        result = execute(
            job,
            asset_selection=resync_keys(name),
            asset_check_selection=resync_check_keys(name),
            run_config={
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
            tags=resync_run_tags(name, None),
        )
        code, lines = exit_code(result)
        _report_sync(settings, name, result.run_id, code, lines)
        worst = max(worst, code)
    return worst


def _report_sync(
    settings: Settings, config: str, run_id: str, code: int, lines: Sequence[str]
) -> None:
    """Done: one line (commit, files, rows, where). Failed: the cause first, then the verdict."""
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
            3: "upstream unreachable or sent an invalid answer",
            4: "local storage failed",
            errors.INTERNAL_EXIT_CODE: "internal error",
        }.get(code, "failed")
        cause, *more = [*lines, verdict]
        print(f"tol-dagster: {config}: {cause}", file=out)  # the first line: cause and fix
        print(
            f"{config}: {verdict}; the mirror keeps its last validated generation [run {run_id}]",
            file=out,
        )
        for line in more[:-1]:
            print(f"  {line}", file=out)

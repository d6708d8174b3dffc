"""`tol-dagster audit`: the weekly audit on demand, for those who run no daemon: the mirror
re-hashed against its manifest (and upstream asked again), every published slice against the
catalog, every derived table against its build's record. It runs the code location's
`audit_job` (the UI's history shows it, and `mirror_change_sensor` rebuilds the drifted slices
and tables it names when a daemon runs) and writes nothing itself. Exit 0 when every byte is
as published; 4 (local storage) naming what drifted and how to mend it: a `tol-dagster sync`
fetches drifted mirror files again, `tol-dagster slice KEY` rebuilds a slice (and, first, a
drifted derived table), `tol-dagster slices add-rank RANK` a rank's drifted slices.
"""

from __future__ import annotations

import dagster as dg

from tol_dagster.cli import progress_view, verbosity
from tol_dagster.cli.config_option import select_configs
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.report import print_document, print_failure, say
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.mirror.jobs import AUDIT_JOB
from tol_dagster.defs.published.tables_audit import table_checks
from tol_dagster.derived import built_from
from tol_dagster.errors import LocalStorageError
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.settings import Settings
from tol_dagster.slices.audit import SLICES_AUDIT_CHECK
from tol_dagster.store.manifest import load_manifest

#: The exit code of drift: bytes on local storage no longer as published.
DRIFT_EXIT_CODE = LocalStorageError.exit_code


def audit_checks(configs: tuple[str, ...]) -> list[dg.AssetCheckKey]:
    """The audit's checks of each of `configs`: the mirror's, the catalog's and each derived
    table's."""
    return [
        check
        for config in configs
        for check in (
            dg.AssetCheckKey(asset_key(config, "mirror"), AUDIT_CHECK),
            dg.AssetCheckKey(asset_key(config, "catalog"), SLICES_AUDIT_CHECK),
            *table_checks(config).values(),
        )
    ]


def run_audit(*, config: str | None) -> int:
    """Run the audit of `config` (every configured one when None); print each check's verdict
    (`--json`: one document)."""
    settings = Settings.from_env()
    configs = select_configs(settings, config)
    unsynced = [n for n in configs if load_manifest(settings.layout, n) is None]
    if config is not None or len(unsynced) == len(configs):
        for name in configs:
            built_from.mirror_inputs(settings.layout, name)  # no mirror: exit 2 saying so
    configs = tuple(n for n in configs if n not in unsynced)  # a config added, not synced yet
    checks = audit_checks(configs)
    instance = open_instance(settings)
    job = load_code_location(settings).resolve_job_def(AUDIT_JOB)
    with progress_view.shown("audit"):
        result = execute(job, instance=instance, asset_check_selection=checks)
    code, lines = exit_code(result)
    if code == 1:  # a check found drift: local bytes, not a refused upstream state
        code = DRIFT_EXIT_CODE
    verdicts = [
        {
            "asset": evaluation.asset_key.to_user_string(),
            "check": evaluation.check_name,
            "passed": evaluation.passed,
            "message": evaluation.description,
        }
        for evaluation in result.get_asset_check_evaluations()
    ]
    not_audited = {
        n: f"no mirror is published yet; run `tol-dagster sync --config {n}`" for n in unsynced
    }
    if verbosity.as_json():
        print_document("audit", code, lines, checks=verdicts, not_audited=not_audited)
    else:
        for verdict in verdicts:
            mark = "ok" if verdict["passed"] else "DRIFT"
            say(f"{mark}: {verdict['asset']} {verdict['check']}: {verdict['message']}")
        for name, why in not_audited.items():
            say(f"not audited: {name}: {why}")
    print_failure(lines)
    return code

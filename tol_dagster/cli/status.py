"""`tol-dagster status`: the mirror next to upstream, and what a sync would do.

The upstream check runs as a Dagster run (the UI's history shows it); the report itself is read
from what the resync keeps on disk, so the demo prints it too.
"""

from __future__ import annotations

from tol_dagster.cli import progress_view, verbosity
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.report import print_document, print_failure, say
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.jobs import STATUS_JOB
from tol_dagster.resync import plan, revision_diff, state
from tol_dagster.settings import Settings
from tol_dagster.store.manifest import load_manifest


def status_report(settings: Settings, checked: bool = True) -> dict[str, dict[str, object]]:
    """Per config: upstream as last observed, the published mirror, and what a sync would do;
    unknown (None) where upstream could not be `checked` just now: the last observation may be
    long out of date."""
    report: dict[str, dict[str, object]] = {}
    for config in settings.configs:
        layout = settings.layout
        manifest = load_manifest(layout, config)
        remote = state.load_remote(layout, config)
        entry: dict[str, object] = {
            "mirror_path": str(layout.mirror_dir(config)),
            "mirror_commit": manifest.upstream_commit if manifest else None,
            "mirror_files": len(manifest.entries) if manifest else 0,
            "mirror_rows": manifest.total_rows if manifest else 0,
            "validated_at": manifest.validated_at if manifest else None,
            "upstream_commit": remote.commit if remote else None,
            "upstream_expected_rows": remote.expected_rows if remote else None,
        }
        entry["last_change"] = revision_diff.last_revision_diff(layout, config)
        entry["upstream_checked"] = checked
        if remote is not None:
            decision = plan.decide(layout, remote)
            entry["in_sync"] = not decision.needs_run if checked else None
            entry["pending"] = decision.reason if checked else _UNCHECKED + decision.reason
        report[config] = entry
    return report


_UNCHECKED = "unknown: upstream could not be checked now; against its last observation: "


def run_status() -> int:
    """Observe upstream in a run, then print the report (`--json`: one document); errors last."""
    settings = Settings.from_env()
    instance = open_instance(settings)
    job = load_code_location(settings).resolve_job_def(STATUS_JOB)
    with progress_view.shown("status"):
        result = execute(job, instance=instance)
    code, lines = exit_code(result)
    report = status_report(settings, checked=code == 0)
    if verbosity.as_json():
        print_document("status", code, lines, configs=report)
    else:
        for config, entry in report.items():
            say(f"{config}:")
            for key, value in entry.items():
                say(f"  {key}: {_shown(key, value)}")
    print_failure(lines)
    return code


def _shown(key: str, value: object) -> object:
    if key == "last_change":
        return _short(value)
    return "unknown" if key == "in_sync" and value is None else value


def _short(change: object) -> str:
    """The last published change by uuid, in one line (`--json` has the per-taxon table)."""
    if not isinstance(change, dict):
        return "none recorded"
    if change.get("first_generation"):
        return f"first generation at {str(change['to_commit'])[:12]}: +{change['added']:,} rows"
    top = ", ".join(
        f"{t.get('species') or t.get('genus') or t.get('family') or '?'} +{t['added']}/-{t['removed']}"
        for t in change.get("taxa", [])[:5]
    )
    return (
        f"{str(change['from_commit'])[:12]} -> {str(change['to_commit'])[:12]}: "
        f"+{change['added']:,} / -{change['removed']:,} rows by uuid in {change['taxa_changed']:,} taxa"
        + (f" (most: {top})" if top else "")
    )

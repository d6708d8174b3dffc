"""The command line's runs, executed through Dagster so they appear in the UI's run history.

Each command runs the job in this process against the persistent instance (DAGSTER_HOME) and
maps the outcome to the public exit codes (`tol_dagster.exit_codes`): 0 done, 1 the gate
refused, 2 bad input or settings, 3 upstream unreachable or invalid, 4 local storage, 130/143
interrupted, 70 a bug.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import dagster as dg

from tol_dagster import catalog, errors, exit_codes
from tol_dagster.cli import interrupts
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.instance import open_instance
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
    slices_op_name,
    slices_partitions_name,
    staged_op_name,
)
from tol_dagster.defs.resync_slot import ensure_resync_pools
from tol_dagster.defs.runs import cli_run_tags, fail_dead_cli_runs
from tol_dagster.derived import taxon_index
from tol_dagster.errors import SettingsError, SliceSpecError
from tol_dagster.resync import plan, revision_diff, state
from tol_dagster.settings import Settings
from tol_dagster.slices import builds as published
from tol_dagster.slices.extract import expected_count, refuse_empty
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store.manifest import load_manifest

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
    """The public exit code of a run, with the lines that explain it, the cause first.

    1 only for checks that refused; a step's own error keeps its code (`exit_codes`), and an
    error we did not foresee is 70 with the run id.
    """
    refused = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if result.success and not refused:
        return 0, []
    causes = [(1, f"check {e.check_name} failed: {e.description}") for e in refused]
    step_failures = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    for event in step_failures or [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE
    ]:
        data = event.step_failure_data if event.is_step_failure else event.event_specific_data
        info = getattr(data, "error", None)
        if info is None:
            continue
        error = exit_codes.classify_error_info(info, run_id=result.run_id)
        if error is None:
            continue  # a blocking check's failure: explained by the failed checks above
        where = f"{event.step_key}: " if event.step_key else ""
        causes.append((error.exit_code, where + " ".join(str(error).split())))
    if not causes:
        error = exit_codes.internal("the run failed without saying why", result.run_id)
        causes.append((error.exit_code, str(error)))
    code = max(c for c, _ in causes)
    worst = [line for c, line in causes if c == code]
    return code, worst + [line for c, line in causes if c != code]


def _drop_failure_events(record: logging.LogRecord) -> bool:
    """Dagster's failure lines (step failures with their whole traceback, "dependencies
    failed", run failure): the command prints the cause instead. `--verbose` keeps them, and
    the run's event log always has them. Our own steps log at INFO and WARNING only."""
    return record.levelno < logging.ERROR


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster's console logger without failure tracebacks (the CLI names the cause).",
)
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    for handler in logger.handlers:
        handler.addFilter(_drop_failure_events)
    return logger


def execute(
    job: dg.JobDefinition, *, instance: dg.DagsterInstance, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Run `job` in this process (`raise_on_error=False`), with a run id known beforehand.

    SIGINT/SIGTERM end the run CANCELED and raise `Interrupted`; an exception from outside the
    run's steps (Dagster's own storage failing) is classified with the run id.
    """
    run_id = str(uuid.uuid4())
    if not exit_codes.verbose():
        job = job.with_logger_defs({"console": terminal_logger})
    watch = interrupts.current()
    mark = exit_codes.storage_mark()
    quiet = contextlib.nullcontext() if exit_codes.verbose() else _quiet_dagster_stderr()
    try:
        with watch.running(instance, run_id), quiet:
            result = job.execute_in_process(
                instance=instance, run_id=run_id, raise_on_error=False, **kwargs
            )
    except KeyboardInterrupt:
        raise _interrupted(instance, run_id, watch) from None
    except Exception as exc:
        _end_failed(instance, run_id, exc)
        error = exit_codes.classify(exc, run_id=run_id)
        first = exit_codes.storage_error_since(mark)
        if isinstance(error, errors.LocalStorageError) and first is not None:
            error = first  # Dagster's storage failed next, on the same full disk
        raise error from exc
    run = instance.get_run_by_id(run_id)
    if watch.signum is not None or (run is not None and run.status == dg.DagsterRunStatus.CANCELED):
        raise _interrupted(instance, run_id, watch)
    if run is not None and _was_interrupted(result):
        raise _interrupted(instance, run_id, watch)
    return result


class _DropDagsterDumps:
    """stderr without the raw dumps Dagster writes there when its storage fails (SQL and
    parameters): the command's first line names the cause instead (`--verbose` keeps them)."""

    DROP = "Exception while writing logger call to event log"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return len(text) if text.startswith(self.DROP) else self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _quiet_dagster_stderr() -> contextlib.AbstractContextManager[object]:
    return contextlib.redirect_stderr(_DropDagsterDumps(sys.stderr))


def _was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    interrupts_ = ("KeyboardInterrupt", "DagsterExecutionInterruptedError")
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            info = getattr(event.event_specific_data, "error", None)
            if info is not None and info.cls_name in interrupts_:
                return True
    return False


def _interrupted(
    instance: dg.DagsterInstance, run_id: str, watch: interrupts.SignalWatch
) -> errors.Interrupted:
    """Mark the run CANCELED (unless it finished cleanly) and say which signal stopped us."""
    signum = watch.wait(1.0) or signal.SIGINT
    canceled = False
    try:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status != dg.DagsterRunStatus.SUCCESS:
            if run.status != dg.DagsterRunStatus.CANCELED:
                instance.report_run_canceled(run, message=f"{signal.Signals(signum).name} received")
            canceled = True
    except Exception:  # storage gone too: the next sync fails the run (its pid is dead)
        pass
    return exit_codes.interrupted(signum, run_id if canceled else None)


def _end_failed(instance: dg.DagsterInstance, run_id: str, exc: BaseException) -> None:
    """Do not leave the run STARTED after an exception escaped Dagster (best effort)."""
    try:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, f"{type(exc).__name__}: {exc}")
    except Exception:
        pass


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
    ensure_resync_pools(instance, settings.configs)
    worst = 0
    for name in configs:
        # A killed sync's run would hold the config's pool in the queue: mark it failed. Two
        # resyncs never overlap: the run waits for the config's lease (tol_dagster.defs.resync_slot).
        fail_dead_cli_runs(instance, name)
        subset = job.get_subset(
            asset_selection=set(resync_keys(name)),
            asset_check_selection=set(resync_check_keys(name)),
        )
        result = execute(
            subset,
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
        )
        code, lines = exit_code(result)
        _report_sync(settings, name, result.run_id, code, lines)
        worst = max(worst, code)
    return worst


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


def status_report(settings: Settings) -> dict[str, dict[str, object]]:
    """Per config: upstream as last observed, the published mirror, and what a sync would do."""
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
        if remote is not None:
            decision = plan.decide(layout, remote)
            entry["in_sync"] = not decision.needs_run
            entry["pending"] = decision.reason
        report[config] = entry
    return report


def run_status(*, as_json: bool) -> int:
    settings = Settings.from_env()
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(STATUS_JOB)
    result = execute(job, run_config=QUIET_LOGS, instance=instance, tags=cli_run_tags())
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


def _print_failure(code: int, lines: Sequence[str], outcome: str | None = None) -> None:
    """The cause first (`tol-dagster: ...`), then what it left as it was, then the rest."""
    if lines:
        print(f"tol-dagster: {lines[0]}", file=sys.stderr)
    if outcome:
        print(outcome, file=sys.stderr)
    for line in lines[1:]:
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
    result = execute(
        defs.resolve_job_def(DERIVED_JOB),
        run_config=QUIET_LOGS,
        instance=instance,
        asset_selection=derived_keys(name),
        tags=cli_run_tags(),
    )
    code, lines = exit_code(result)
    _print_failure(code, lines)
    return code


def _build_slice(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    key: str,
    *,
    allow_empty: bool = False,
) -> int:
    instance.add_dynamic_partitions(slices_partitions_name(name), [key])
    result = execute(
        defs.resolve_job_def(slices_job_name(name)),
        run_config={
            **QUIET_LOGS,
            "ops": {slices_op_name(name): {"config": {"allow_empty": allow_empty}}},
        },
        instance=instance,
        partition_key=key,
        tags=cli_run_tags(),
    )
    code, lines = exit_code(result)
    if code:
        _print_failure(
            code, lines, f"slice {key}: not published; the previous file (if any) is unchanged"
        )
    return code


def run_slice(key_text: str, *, config: str | None, allow_empty: bool = False) -> int:
    """Materialize one slice through Dagster (adding its partition), refresh the catalog.

    A key matching no row is refused (exit 2, close matches named) before any partition or
    run is made, unless `allow_empty` (now or when the slice was last built)."""
    settings = Settings.from_env()
    key = parse_slice_key(key_text)
    name = _one_config(settings, config)
    published.mirror_inputs(settings.layout, name)  # no mirror: say so before touching anything
    instance = open_instance(settings)
    defs = build_definitions(settings)
    code = _ensure_derived(defs, instance, settings, name)
    if code:
        return code
    if not (allow_empty or published.allowed_empty(settings.layout, name, key.name)):
        _refuse_empty(settings, name, key)
    code = _build_slice(defs, instance, name, key.name, allow_empty=allow_empty)
    if code:
        return code
    code = _refresh_catalog(defs, instance, name)
    print(settings.layout.slices_dir(name) / key.file_name)
    return code


def _refuse_empty(settings: Settings, name: str, key: SliceKey) -> None:
    """`EmptySliceError` (exit 2) if no row of the mirror matches `key`."""
    _, files = published.mirror_inputs(settings.layout, name)
    index = taxon_index.read_taxon_index(settings.layout, name)
    refuse_empty(key, index, expected_count(key, index, files))


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
    result = execute(
        defs.resolve_job_def(CATALOG_JOB),
        run_config=QUIET_LOGS,
        instance=instance,
        asset_selection=[asset_key(config, "catalog")],
        tags=cli_run_tags(),
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


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False for a name the file system cannot hold (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def remove_slice_command(key_text: str, *, config: str | None) -> int:
    """Remove a slice: its partition, its file and its catalog row (the catalog is rewritten).

    Works for any existing partition, even one whose name no longer parses as a key (made
    before a rule was tightened, or added by hand in the UI): the raw text is matched too."""
    settings = Settings.from_env()
    name = _one_config(settings, config)
    layout = settings.layout
    try:
        key: SliceKey | None = parse_slice_key(key_text)
    except SliceSpecError as error:
        key, invalid = None, error
    names = {key_text} if key is None else {key.name, key_text}
    instance = open_instance(settings)
    partitions = slices_partitions_name(name)
    known = sorted(n for n in names if instance.has_dynamic_partition(partitions, n))
    slices_dir = layout.slices_dir(name)
    paths = {slices_dir / f"{quote(n, safe='')}.parquet" for n in names}  # hand-made names
    if key is not None:
        paths.add(slices_dir / key.file_name)
    paths.update(published.remove_slice_records_named(layout, name, names))
    files = sorted(p for p in paths if p.parent == slices_dir and _is_file(p))
    in_catalog = catalog.remove_entry(layout, name, key_text)
    if not (known or files or in_catalog):
        why = f" (nor a valid key: {invalid})" if key is None else ""
        raise SliceSpecError(
            f"slice {key_text if key is None else key.name} of {name} does not exist{why}; "
            "`tol-dagster slices list` shows the slices"
        )
    for partition in known:
        instance.delete_dynamic_partition(partitions, partition)
    for path in files:
        path.unlink(missing_ok=True)
    code = _refresh_catalog(build_definitions(settings), instance, name)
    print(f"removed {key_text if key is None else key.name} from {name}")
    return code

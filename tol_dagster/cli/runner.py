"""The in-process Dagster runner of the command line: runs appear in the UI's run history.

A command runs its job in this process against the persistent instance (DAGSTER_HOME) and maps
the outcome to the public exit codes (`tol_dagster.exit_codes`): 0 done, 1 the gate refused, 2
bad input or settings, 3 upstream unreachable or invalid, 4 local storage, 130/143 interrupted,
70 a bug. Here too: Dagster's console lines silenced unless `--verbose` (the command names the
cause, `cli.progress_view` shows the work), SIGINT/SIGTERM ending the run CANCELED, and the runs
that bring the derived tables, slices and catalog of a config up to date.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import dagster as dg
from dagster._core.execution.execution_result import ExecutionResult

from tol_dagster import errors, exit_codes
from tol_dagster.cli import interrupts, launch, report, step_output, verbosity
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.orphaned_runs import cli_run_tags
from tol_dagster.defs.published import refresh
from tol_dagster.defs.published.jobs import (
    CATALOG_JOB,
    DERIVED_JOB,
    rank_slices_job_name,
    slices_job_name,
)
from tol_dagster.defs.published.keys import derived_keys, rank_slices_op_name, slices_op_name
from tol_dagster.defs.published.partitions import add_slice_partition
from tol_dagster.defs.published.slices_audit import drifted_slices
from tol_dagster.defs.published.tables_audit import drifted_tables
from tol_dagster.derived import built_from
from tol_dagster.settings import Settings
from tol_dagster.slices.audit import still_drifted
from tol_dagster.slices.rank_pass import by_rank_pass
from tol_dagster.store.layout import Layout

#: Dagster's console logger: silent unless `--verbose` (then its INFO lines, failures and
#: tracebacks too). Run config, not another logger: the job keeps the code location's snapshot.
#: The run's event log keeps everything either way.
SILENT, TALKATIVE = "CRITICAL", "INFO"


def console_logs() -> dict[str, Any]:
    """The run config of Dagster's console logger for this command."""
    level = TALKATIVE if verbosity.verbose() else SILENT
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def exit_code(result: ExecutionResult) -> tuple[int, list[str]]:
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


def execute(
    job: dg.JobDefinition,
    *,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    partition_key: str | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    asset_check_selection: Sequence[dg.AssetCheckKey] | None = None,
) -> ExecutionResult:
    """Run `job` (the code location's, see `cli.launch`) in this process, failures recorded.

    The run is tagged with who launched it (`tol/source`); SIGINT/SIGTERM end it CANCELED and
    raise `Interrupted`; an exception from outside the run's steps (Dagster's own storage
    failing) is classified with the run id.
    """
    run_id = str(uuid.uuid4())
    watch = interrupts.current()
    mark = exit_codes.storage_mark()
    quiet = contextlib.nullcontext() if verbosity.verbose() else _quiet_dagster_stderr()
    if launch.runs_in_children(job) and not verbosity.verbose():
        step_output.without_dagster_lines()
    try:
        with watch.running(instance, run_id), quiet:
            run = launch.create_run(
                job,
                instance,
                run_id=run_id,
                run_config={**(run_config or {}), **console_logs()},
                tags={**(tags or {}), **cli_run_tags(run_id, _source[-1])},
                partition_key=partition_key,
                asset_selection=None if asset_selection is None else set(asset_selection),
                asset_check_selection=(
                    None if asset_check_selection is None else set(asset_check_selection)
                ),
            )
            result = launch.execute_created(job, run, instance)
    except KeyboardInterrupt:
        raise _interrupted(instance, run_id, watch) from None
    except Exception as exc:
        _end_failed(instance, run_id, exc)
        error = exit_codes.classify(exc, run_id=run_id)
        first = exit_codes.storage_error_since(mark)
        if isinstance(error, errors.LocalStorageError) and first is not None:
            error = first  # Dagster's storage failed next, on the same full disk
        raise error from exc
    stored = instance.get_run_by_id(run_id)
    if watch.signum is not None or (
        stored is not None and stored.status == dg.DagsterRunStatus.CANCELED
    ):
        raise _interrupted(instance, run_id, watch)
    if stored is not None and _was_interrupted(result):
        raise _interrupted(instance, run_id, watch)
    return result


@contextlib.contextmanager
def launched_by(source: str) -> Iterator[None]:
    """Within: runs are tagged `tol/source=<source>` (the demo's are "demo"; else "cli")."""
    _source.append(source)
    try:
        yield
    finally:
        _source.pop()


_source = ["cli"]


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


def _was_interrupted(result: ExecutionResult) -> bool:
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


#: A step's exit code and the lines that explain it, the cause first (none when it is 0).
Outcome = tuple[int, list[str]]


def _ensure_derived(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: Settings, name: str
) -> Outcome:
    """Summaries, index and centroids for the current mirror generation (a run only if stale,
    one of them no longer reads, or the last audit found one drifted)."""
    layout = settings.layout
    built_from.mirror_inputs(layout, name)  # no mirror: say so
    current = refresh.current_derived(layout, name) is not None
    drifted = drifted_tables(instance, name)
    if current and not drifted and built_from.published_tables_read(layout, name):
        return 0, []
    if verbosity.chatty():
        why = f" (the audit found {', '.join(drifted)} drifted)" if drifted else ""
        print(
            f"{name}: building summaries, taxon index and centroids of the mirror{why}…",
            file=sys.stderr,
        )
    result = execute(
        defs.resolve_job_def(DERIVED_JOB),
        instance=instance,
        asset_selection=derived_keys(name),
    )
    code, lines = exit_code(result)
    report.print_failure(lines)
    return code, lines


def _build_slice(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    key: str,
    *,
    allow_empty: bool = False,
) -> Outcome:
    add_slice_partition(instance, name, key)
    return _run_partition(
        defs.resolve_job_def(slices_job_name(name)),
        instance,
        {slices_op_name(name): {"allow_empty": allow_empty}},
        key,
        f"slice {key}: not published; the previous file (if any) is unchanged",
    )


def _build_rank(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    layout: Layout,
    name: str,
    rank: str,
    min_rows: int | None,
) -> Outcome:
    """One pass publishing every value of `rank` (`tol/<config>/rank_slices`, partition `rank`),
    and building again its slices the last audit found drifted and still are (as
    `mirror_change_sensor`; re-hashed, so that the next `add-rank` does not build them again)."""
    named = drifted_slices(instance, name)
    named_here = by_rank_pass(layout, name, named.names if named else []).get(rank, [])
    rebuild = still_drifted(layout, name, named_here)
    return _run_partition(
        defs.resolve_job_def(rank_slices_job_name(name)),
        instance,
        {rank_slices_op_name(name): {"min_rows": min_rows, "rebuild": rebuild}},
        rank,
        f"{rank}: the slices named above are not published; the others are",
    )


def _run_partition(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    config: Mapping[str, Mapping[str, Any]],
    partition: str,
    failed: str,
) -> Outcome:
    """Run `partition` of `job` with each op's `config`; on failure, say `failed` after why."""
    result = execute(
        job,
        run_config={"ops": {op: {"config": dict(c)} for op, c in config.items()}},
        instance=instance,
        partition_key=partition,
    )
    code, lines = exit_code(result)
    if code:
        report.print_failure(lines, failed)
    return code, lines


def refresh_published(settings: Settings, name: str) -> int:
    """What the automation and `mirror_change_sensor` do after a resync, in this process and
    as planned by `tol_dagster.defs.published.refresh`: derived outputs, the slices the new
    generation touched (and declared ones never built), the whole ranks, the catalog."""
    instance = open_instance(settings)
    defs = launch.load_code_location(settings)
    code, _ = _ensure_derived(defs, instance, settings, name)
    if code:
        return code
    built = refresh.current_derived(settings.layout, name)
    assert built is not None
    plan = refresh.plan_slice_refresh(instance, settings.layout, name, settings.slices_file, built)
    for key in plan.rebuild:
        code = max(code, _build_slice(defs, instance, name, key)[0])
    for rank, min_rows in refresh.ranks_to_refresh(
        settings.layout, name, settings.slices_file
    ).items():
        code = max(code, _build_rank(defs, instance, settings.layout, name, rank, min_rows)[0])
    return max(code, _refresh_catalog(defs, instance, name)[0])


def _refresh_catalog(defs: dg.Definitions, instance: dg.DagsterInstance, config: str) -> Outcome:
    """The catalog written anew, without its audit check: another slice's drift is the audit's
    to report (the UI, the weekly job), not a failure of this command."""
    result = execute(
        defs.resolve_job_def(CATALOG_JOB),
        instance=instance,
        asset_selection=[asset_key(config, "catalog")],
        asset_check_selection=[],
    )
    code, lines = exit_code(result)
    report.print_failure(lines)
    return code, lines

"""Jobs the tests run with `dg.execute_job` on another executor: module-level functions, so that
each step's process can rebuild the job (a reconstructable job) from the same environment."""

from __future__ import annotations

import os
import time

import dagster as dg

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.mirror.jobs import RESYNC_JOB
from tol_dagster.defs.published.jobs import DERIVED_JOB
from tol_dagster.settings import Settings

#: Set: the summaries' parts steps after the first wait (see `_hold_after_first_summary_part`).
HOLD_AFTER_FIRST_PART = "TOL_TEST_HOLD_AFTER_FIRST_PART"


def resync_job() -> dg.JobDefinition:
    """The code location's resync job, on the executor `TOL_EXECUTOR` names."""
    return build_definitions(Settings.from_env()).resolve_job_def(RESYNC_JOB)


def derived_job() -> dg.JobDefinition:
    """The code location's derived-tables job, on the executor `TOL_EXECUTOR` names."""
    return build_definitions(Settings.from_env()).resolve_job_def(DERIVED_JOB)


def run_derived_job() -> None:
    """Run `derived_job` over the default config in this fresh process, print the run's id.

    A process of its own: a pytest process's forkserver keeps the environment of the test that
    started it, so a later test's TOL_HOME would not reach its steps."""
    from dagster._core.definitions.reconstruct import ReconstructableJob

    from tol_dagster.defs.published.keys import derived_keys
    from tol_dagster.schema import DEFAULT_CONFIG

    if os.environ.get(HOLD_AFTER_FIRST_PART):
        _hold_after_first_summary_part()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            ReconstructableJob.for_file(__file__, "derived_job"),
            instance,
            asset_selection=derived_keys(DEFAULT_CONFIG),
        )
    print(result.run_id)
    raise SystemExit(0 if result.success else 1)


def _hold_after_first_summary_part() -> None:
    """Make every summaries `parts` step after the first wait (in this process: in_process
    executor), so that a test can kill the run between its batches."""
    from tol_dagster.derived import summaries

    write_parts = summaries.write_parts
    calls = []

    def held(*args: object, **kwargs: object) -> tuple[str, ...]:
        calls.append(1)
        if len(calls) > 1:
            time.sleep(600)
        return write_parts(*args, **kwargs)  # type: ignore[arg-type]

    summaries.write_parts = held  # type: ignore[assignment]


if __name__ == "__main__":
    run_derived_job()

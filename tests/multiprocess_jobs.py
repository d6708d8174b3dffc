"""Jobs the tests run with `dg.execute_job` on another executor: module-level functions, so that
each step's process can rebuild the job (a reconstructable job) from the same environment."""

from __future__ import annotations

import dagster as dg

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.mirror.jobs import RESYNC_JOB
from tol_dagster.settings import Settings


def resync_job() -> dg.JobDefinition:
    """The code location's resync job, on the executor `TOL_EXECUTOR` names."""
    return build_definitions(Settings.from_env()).resolve_job_def(RESYNC_JOB)

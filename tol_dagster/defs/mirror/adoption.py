"""Adopting a user's copy through Dagster: one `adopt_<config>` job per config whose launchpad
asks for the folder, and what `fetched`'s plan step does to adopt it before it stages.

The job is the resync (remote -> fetched -> staged -> mirror, with the gate's checks) with the
folder in the plan step's run config, so it holds the config's pool and lease like any resync,
and its run shows the adoption report in the `fetched` materialization's metadata, the same
report `tol-dagster adopt` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from tol_dagster.defs.keys import safe_name
from tol_dagster.defs.metadata import with_size
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.errors import SettingsError
from tol_dagster.hub.client import HubClient
from tol_dagster.resync import adopt
from tol_dagster.resync.adopt_report import AdoptionReport
from tol_dagster.resync.fetch import Log
from tol_dagster.resync.state import load_remote, refresh_remote
from tol_dagster.store.layout import Layout

#: The fetched materialization's metadata key holding the report (`AdoptionReport.to_dict`).
REPORT_KEY = "adoption"


#: A config mapping hides the loggers' config: the run logs at INFO (progress, not debug events).
RUN_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def adopt_job_name(config: str) -> str:
    return f"adopt_{safe_name(config)}"


def stage_run_config(path: str, copy: bool = False) -> dict[str, Any]:
    """A resync's run config values that adopt `path` (absolute) before staging."""
    return {"adopt_from": path, "adopt_copy": copy}


def build_adopt_job(config: str, tags: dict[str, str]) -> dg.UnresolvedAssetJobDefinition:
    """`adopt_<config>`: its launchpad takes `path` (and `copy`), then runs a whole resync."""

    @dg.config_mapping(
        config_schema={
            "path": dg.Field(
                str,
                description="The folder `hf download --local-dir` wrote (absolute, on the "
                "machine the run executes on), or any folder of the config's parquet files.",
            ),
            "copy": dg.Field(
                bool, default_value=False, description="Copy instead of hard-linking."
            ),
        }
    )
    def from_folder(values: dict[str, Any]) -> dict[str, Any]:
        return {
            **RUN_LOGS,
            **resync_run_config(config, **stage_run_config(values["path"], values["copy"])),
        }

    selection = dg.AssetSelection.assets(
        *resync_keys(config)
    ).without_checks() | dg.AssetSelection.checks(*resync_check_keys(config))
    return dg.define_asset_job(
        adopt_job_name(config),
        selection=selection,
        config=from_folder,
        tags=tags,
        description=f"Adopt the copy of `{config}` a user already has (hard links, verified by "
        "sha256), then resync: fetch only what is missing or different, gate, publish.",
    )


def adopt_folder(
    layout: Layout, client: HubClient, config: str, path: str | None, copy: bool, log: Log
) -> AdoptionReport | None:
    """Adopt `path` into the staging of the upstream commit the resync is about to stage
    (None: no path, a plain resync)."""
    if not path:
        return None
    if not Path(path).is_absolute():
        raise SettingsError(
            f"adopt path {path!r} is relative; give it absolute (the run may execute in "
            "another folder than the one you launched it from)"
        )
    remote = load_remote(layout, config) or refresh_remote(layout, client, config)
    report = adopt.adopt(layout, remote, Path(path), copy=copy, log=log)
    log(report.summary())
    return report


def adoption_metadata(report: AdoptionReport) -> dict[str, dg.MetadataValue]:
    """What the run shows: the counts, the per-file table and the whole report as JSON."""
    totals = report.totals()
    return {
        REPORT_KEY: dg.MetadataValue.json(report.to_dict()),
        "adoption_files": dg.MetadataValue.md(report.markdown()),
        "adopted_files": dg.MetadataValue.int(totals["adopted"]["files"]),
        **with_size("adopted_bytes", totals["adopted"]["bytes"]),
        "fetched_from_hub": dg.MetadataValue.int(totals["fetched"]["files"]),
        "ignored_files": dg.MetadataValue.int(totals["ignored"]["files"]),
    }

"""`make demo`: the whole pipeline on the embedded sample, served by the local Hub.

Builds the sample repo once under the data home, serves it with the local Hub (the real
huggingface_hub client talks to it), runs every asset through Dagster exactly as production
does, audits what it published (`tol-dagster audit`), and tells the user what was produced and
how to open the UI.
"""

from __future__ import annotations

import os
import sys
import time

import duckdb

from tol_dagster.catalog import list_slices
from tol_dagster.cli import progress_view
from tol_dagster.cli.audit_command import run_audit
from tol_dagster.cli.report import say
from tol_dagster.cli.runner import refresh_published
from tol_dagster.cli.status import status_report
from tol_dagster.cli.sync_command import run_sync
from tol_dagster.derived.summaries import summary_path
from tol_dagster.devtools.demo_repo import ensure_demo_repo
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.settings import OFFLINE_HF_ENV, Settings


def run_demo() -> int:
    """Sync the sample through the local Hub, publish every config's outputs, say what is where."""
    # The local Hub needs no telemetry, update check or Xet: keep the client off the internet.
    for name, value in OFFLINE_HF_ENV.items():
        os.environ.setdefault(name, value)
    base = Settings.from_env()
    repo = ensure_demo_repo(base.layout)
    started = time.monotonic()
    with LocalHub(repo, repo_id=base.repo_id) as hub:
        os.environ["TOL_HUB_ENDPOINT"] = hub.endpoint
        say(f"local Hub serving {repo} at {hub.endpoint} (a development tool, not the real Hub)")
        code = run_sync(config=None, accept_row_loss=False, accept_schema_change=False)
        if code != 0:
            print(
                f"demo: the sync ended with exit code {code}; see the messages above",
                file=sys.stderr,
            )
            return code
        settings = Settings.from_env()
        for config in settings.configs:
            with progress_view.shown(f"publish {config}"):
                code = refresh_published(settings, config)
            if code != 0:
                print(
                    f"demo: building the published outputs of {config} ended with exit code {code}",
                    file=sys.stderr,
                )
                return code
        # The audit checks evaluated: the UI shows them passed, not "Not evaluated".
        code = run_audit(config=None)
        if code != 0:
            print(f"demo: the audit ended with exit code {code}", file=sys.stderr)
            return code
        report = status_report(settings)
    say("")
    say(f"demo done in {time.monotonic() - started:.0f} s. What was produced:")
    for config, entry in report.items():
        say(f"  {config}: mirror {entry['mirror_path']}")
        say(
            f"    {entry['mirror_files']} files, {entry['mirror_rows']:,} rows at upstream commit {str(entry['mirror_commit'])[:12]}"
        )
        _print_published(settings, config)
    say(
        f"  Dagster runs and event logs: {os.environ.get('DAGSTER_HOME', settings.layout.dagster_home())}"
    )
    _print_next_steps(first_config=next(iter(report)))
    return 0


def _print_next_steps(first_config: str) -> None:
    """How to query what the demo published, and how to open the UI."""
    say("")
    say("Query the mirror with DuckDB, pinned to one generation while resyncs publish, e.g.:")
    say(
        '  .venv/bin/python -c "import duckdb; from tol_dagster.catalog import mirror_files; '
        f"duckdb.read_parquet([str(p) for p in mirror_files('{first_config}')])"
        ".aggregate('family, count(*) AS n').order('n DESC').limit(5).show()\""
    )
    say(
        '  .venv/bin/python -c "from tol_dagster.catalog import read_pandas; '
        "print(read_pandas('family=Felidae').head())\""
    )
    say("  .venv/bin/python examples/nearest_centroid.py family=Felidae")
    say("Open the UI: `make dev`, then http://127.0.0.1:3000 (sensors and schedules tick there).")


def _print_published(settings: Settings, config: str) -> None:
    """The slices, and a few summary lines: top orders by images, images per source."""
    layout = settings.layout
    slices = list_slices(config=config, home=settings.home)
    say(
        f"    {len(slices)} slices in {layout.slices_dir(config)} (catalog: {layout.catalog_path(config)}):"
    )
    for row in slices.to_dict("records"):
        say(
            f"      {row['name']:<34} {int(row['rows']):>7,} rows  {int(row['bytes']) / 1e6:>7.1f} MB"
        )
    rank_counts = str(summary_path(layout, config, "rank_counts"))
    con = duckdb.connect()
    top = con.execute(
        "SELECT \"order\", sum(images) AS images FROM read_parquet(?) WHERE rank = 'order' "
        "GROUP BY ALL ORDER BY images DESC LIMIT 5",
        [rank_counts],
    ).fetchall()
    say("    top orders by images: " + ", ".join(f"{o or 'NULL'} {n:,}" for o, n in top))
    sources = con.execute(
        "SELECT source_dataset, sum(images) AS images FROM read_parquet(?) WHERE rank = 'kingdom' "
        "GROUP BY ALL ORDER BY images DESC",
        [rank_counts],
    ).fetchall()
    say("    images per source: " + ", ".join(f"{s or 'NULL'} {n:,}" for s, n in sources))
    say(f"    summaries: {layout.summary_dir(config)}; centroids: {layout.centroids_path(config)}")

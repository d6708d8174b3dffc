"""The Dagster UI in a real browser, as a new user meets it after `make demo` and `make dev`.

Debian's Chromium (`/usr/bin/chromium`, never a downloaded browser) driven by Playwright opens
`make dev`'s server (`tol_dagster.devtools.dev_server`, on free ports, over a temp data home
where the demo ran on a small sample) and checks what a person sees: the asset graph; a
summary's table preview with a `NULL` cell; the mirror's audit check evaluated (it follows each
resync) and passed, and the catalog's and the taxon index's (the demo runs the audit); a slice
partition (`genus=Panthera`) added and materialized from the page, its checks passed.

Screenshots are saved under the test's temp folder; with `TOL_SAVE_SCREENSHOTS=<dir>` the asset
graph and the slice's checks are copied there too (the README's come from `docs/screenshots`).
Without Chromium or Playwright the test skips naming what is missing; `.ci/run` sets
`TOL_REQUIRE_BROWSER=1`, so there it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
import requirements
import yaml
from processes import REPO_ROOT, Stack, endpoint_of, free_port, http_json, running

from tol_dagster.defs.mirror.keys import mirror_group
from tol_dagster.defs.published.jobs import slices_job_name
from tol_dagster.defs.published.keys import published_group
from tol_dagster.derived.table_audit import TABLES_AUDIT_CHECK
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.slices.audit import SLICES_AUDIT_CHECK
from tol_dagster.store.layout import Layout

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # the test says so and skips (or fails under TOL_REQUIRE_BROWSER=1)
    sync_playwright = None

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
CONFIG = DEFAULT_CONFIG
ASSETS = f"/assets/tol/{CONFIG}"
#: The demo's pipeline on a small sample (the demo's own takes minutes to build and sync), with
#: one declared slice: what the page shows is the same, in a fraction of the time.
SAMPLE = {"rows": 3000, "files": 2, "seed": 7, "row_group_size": 500}
DECLARED_SLICE = "family=Felidae"
NEW_SLICE = "genus=Panthera"  # 4 rows in the sample
ASSET_NAMES = (
    *("remote", "fetched", "staged", "mirror", "taxon_index", "centroids", "slices", "catalog"),
    *("lineage", "rank_counts", "img_type", "basis_of_record", "publisher", "files"),
)
SLICE_CHECKS = (
    "emb_matches_mirror",
    "rows_match_summary",
    "rows_satisfy_key",
    "schema_matches_mirror",
    "uuids_unique",
)
#: Every wait from the first process start: the demo and the server start take most of it.
BUDGET_S = 300.0
#: What the page may take to show something (the server shares two cores with the suite).
PAGE_TIMEOUT_MS = 90_000
SAVE_SCREENSHOTS = "TOL_SAVE_SCREENSHOTS"
#: The screenshots the README shows, by the name this test saves them under.
README_SHOTS = {
    "asset_graph.png": "asset_graph.png",
    "slice_partition_checks.png": "slice_checks.png",
}

#: `make demo` on `SAMPLE`.
DEMO = f"""
import sys
from tol_dagster.devtools import sample
from tol_dagster.cli.demo import run_demo
sample.DEMO_SAMPLE = {SAMPLE!r}
sys.exit(run_demo())
"""

#: Expand both groups of the global asset graph and skip the community dialog.
BROWSER_STATE = f"""
localStorage.setItem('communityNux', '"1"');
localStorage.setItem('dagster-nav-collapsed', 'true');
localStorage.setItem('asset-graph-open-graph-nodes-global-__GLOBAL__', JSON.stringify({{
  expanded: 'global@global:{mirror_group(CONFIG)},global@global:{published_group(CONFIG)}'
}}));
"""


def require_browser() -> Path:
    """Chromium and Playwright, or a skip (a failure under TOL_REQUIRE_BROWSER=1) naming them."""
    if sync_playwright is None:
        requirements.missing(
            "Playwright for Python is not installed: `pip install -e '.[dev]'`",
            requirements.BROWSER_FLAG,
        )
    if not os.access(CHROMIUM, os.X_OK):
        requirements.missing(
            f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium`",
            requirements.BROWSER_FLAG,
        )
    return CHROMIUM


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from running(tmp_path / "logs", BUDGET_S)


@pytest.mark.timeout(BUDGET_S + 120)
def test_the_ui_shows_the_graph_a_null_cell_the_audit_and_builds_a_slice_added_on_the_page(
    stack: Stack, tmp_path: Path
) -> None:
    chromium = require_browser()
    home = tmp_path / "tol_home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tol_dagster" / "dagster.yaml", dagster_home / "dagster.yaml")
    slices_file = tmp_path / "slices.yaml"
    slices_file.write_text(yaml.safe_dump({"slices": {"all": [DECLARED_SLICE]}}))
    env = {
        **os.environ,
        "TOL_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "TOL_SLICES_FILE": str(slices_file),
        "TOL_HUB_ENDPOINT": "http://127.0.0.1:9",  # the demo serves its sample itself
        "PYTHONUNBUFFERED": "1",
    }
    _run(stack, "demo", DEMO, env)
    repo = Layout(home).demo_repo()
    stack.start(
        "hub",
        [str(BIN / "python"), "-m", "tol_dagster.devtools.localhub", str(repo), "--port", "0"],
        env,
    )
    env["TOL_HUB_ENDPOINT"] = endpoint_of(stack)
    port = free_port()
    dev_server = ["-m", "tol_dagster.devtools.dev_server", "--dagster-port", str(port)]
    stack.start(
        "dev", [str(BIN / "python"), *dev_server, "--local-hub-port", str(free_port())], env
    )
    base = f"http://127.0.0.1:{port}"
    stack.wait_for("the Dagster UI to answer", lambda: _answers(f"{base}/server_info"))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium))
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        expect.set_options(timeout=PAGE_TIMEOUT_MS)
        page.add_init_script(BROWSER_STATE)
        _summary_preview_shows_null(page, base, shots)
        _audit_passed(page, base, shots, "mirror", AUDIT_CHECK)
        _audit_passed(page, base, shots, "catalog", SLICES_AUDIT_CHECK)
        _audit_passed(page, base, shots, "taxon_index", TABLES_AUDIT_CHECK)
        _add_and_materialize_a_slice(page, base, shots, stack, dagster_home)
        _asset_graph_shows_every_asset_materialized(page, base, shots)
        browser.close()
    _save_for_readme(shots)


def _run(stack: Stack, name: str, script: str, env: dict[str, str]) -> None:
    """Run `script` in a fresh Python, its output in the logs; fail with its tail if it fails."""
    log = stack.logs / f"{name}.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [str(BIN / "python"), "-c", script],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUDGET_S,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        stack.fail(f"{name} exited with {done.returncode}:\n{tail}")


def _answers(url: str) -> bool | None:
    try:
        return bool(http_json(url))
    except OSError:
        return None


def _asset_graph_shows_every_asset_materialized(page: Page, base: str, shots: Path) -> None:
    """Every asset of the config is on the global graph, its two groups open, and once the
    runs the automation started settle (the catalog after the new slice), every one shows
    materialized and in sync."""
    page.set_viewport_size({"width": 2000, "height": 1500})  # remote -> ... -> catalog: 7 wide
    page.goto(f"{base}/asset-groups")
    for name in ASSET_NAMES:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    # Zoomed in until the nodes show their state, the asset tree closed.
    page.locator('button:has([aria-label="panel_show_right"])').first.click()
    for _ in range(3):
        page.locator('[aria-label="zoom_in"]').first.click()
    page.mouse.move(300, 1300)  # the whole graph in the picture
    page.mouse.down()
    page.mouse.move(500, 1250, steps=10)
    page.mouse.up()
    expect(page.get_by_text("Materializing", exact=False)).to_have_count(0)
    expect(page.get_by_text("Unsynced", exact=False)).to_have_count(0)  # the catalog followed
    # The slices show their partitions instead: all built, the one added on the page too.
    expect(page.get_by_text("Materialized", exact=True)).to_have_count(len(ASSET_NAMES) - 1)
    expect(page.get_by_text("100% filled")).to_be_visible()
    page.screenshot(path=shots / "asset_graph.png")


def _summary_preview_shows_null(page: Page, base: str, shots: Path) -> None:
    """The lineage summary's preview is a table on the page whose NULL cells read `NULL`."""
    page.goto(f"{base}{ASSETS}/summary/lineage")
    preview = page.locator("table:has(th:text-is('species'))").first
    expect(preview).to_be_visible()
    expect(preview.locator("td", has_text=re.compile(r"^NULL$")).first).to_be_visible()
    preview.scroll_into_view_if_needed()
    page.screenshot(path=shots / "summary_preview.png")


def _audit_passed(page: Page, base: str, shots: Path, asset: str, check: str) -> None:
    """`asset`'s audit check shows evaluated, and passed: the mirror's follows each resync,
    the catalog's and the derived tables' the audit the demo runs."""
    page.goto(f"{base}{ASSETS}/{asset}?view=checks")
    expect(page.get_by_text(check).first).to_be_visible()
    expect(page.get_by_text("Passed", exact=True)).to_be_visible()
    page.screenshot(path=shots / f"{asset.replace('/', '_')}_checks.png")


def _add_and_materialize_a_slice(
    page: Page, base: str, shots: Path, stack: Stack, dagster_home: Path
) -> None:
    """Add `NEW_SLICE` as a partition in the launch dialog, launch it, and see it built."""
    page.goto(f"{base}{ASSETS}/slices")
    page.get_by_role("button", name="Materialize").first.click()
    page.get_by_text("Add a partition").click()
    adding = page.get_by_role("dialog").filter(has_text="Add a partition for")
    adding.locator("input").fill(NEW_SLICE)
    adding.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Launch 1 run").click()
    expect(page.get_by_text("Launched run")).to_be_visible()
    run = stack.wait_for("the slice's run to finish", lambda: _slice_run(dagster_home))
    assert run.job_name == slices_job_name(CONFIG), "the UI runs a slice under its slices job"

    page.goto(f"{base}{ASSETS}/slices?view=partitions&partition={quote(NEW_SLICE, safe='')}")
    expect(page.get_by_text("read_with", exact=True)).to_be_visible()
    expect(page.get_by_text(f"read_pandas('{NEW_SLICE}'", exact=False)).to_be_visible()
    page.screenshot(path=shots / "slice_partition.png")
    page.goto(f"{base}{ASSETS}/slices?view=checks")
    for check in SLICE_CHECKS:
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(SLICE_CHECKS))
    expect(page.get_by_text(re.compile(f"slice {re.escape(NEW_SLICE)}:")).first).to_be_visible()
    page.screenshot(path=shots / "slice_checks.png")


def _slice_run(dagster_home: Path) -> dg.DagsterRun | None:
    """The run the page launched for `NEW_SLICE` once it finished; a failure fails the test."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": NEW_SLICE}))
        if not runs or not runs[0].is_finished:
            return None
        run = runs[0]
        if run.status != dg.DagsterRunStatus.SUCCESS:
            failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            messages = [str(e.dagster_event.event_specific_data) for e in failures]
            pytest.fail(f"the slice's run {run.run_id} ended {run.status}: {messages}")
        return run


def _save_for_readme(shots: Path) -> None:
    """Copy the README's screenshots to `TOL_SAVE_SCREENSHOTS`, when set."""
    target = os.environ.get(SAVE_SCREENSHOTS)
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for name, saved in README_SHOTS.items():
        shutil.copy(shots / saved, Path(target) / name)

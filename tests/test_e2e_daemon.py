"""End to end with the real `dagster-webserver` and `dagster-daemon`, the local Hub in its own process.

What a user does in `make dev`, headless: turn `upstream_change_sensor` on through GraphQL, edit
a file upstream, and watch the daemon resync the mirror to the file's new sha256. On the way it
proves the queue policy in `dagster.yaml`: two resync runs of one config queued together run one
after the other, while a resync of another config is admitted next to them, and one of the two
is launched as the UI's Materialize button launches it (Dagster's asset job, no `tol/resync`
tag): the config's pool, not the tag, holds it. And it proves that the daemon evaluates the
declarative automation: once `published_automation_sensor` runs, the derived tables catch up
with the mirrors published before, then follow the new mirror generation the sensor's resync
publishes, each time in a run the automation launched.

One test, not several: the processes take most of the time and xdist would start them once per
worker. Every wait is bounded; a failure shows the tail of each process's log. It runs twice:
on SQLite under DAGSTER_HOME, and on PostgreSQL (`TOL_DAGSTER_PG_URL`, a database of its own),
where the webserver, the daemon, the runs it launches and this test share the database.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from processes import (
    LOCATION,
    REPO_ROOT,
    Stack,
    endpoint_of,
    free_port,
    http_json,
    location_loaded,
    running,
)
from service_testing import pg_database

from tol_dagster.cluster_settings import PG_URL_VAR
from tol_dagster.defs.keys import RESYNC_TAG, asset_key
from tol_dagster.defs.mirror.jobs import RESYNC_JOB
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.defs.published.automation import AUTOMATION_SENSOR
from tol_dagster.defs.published.keys import derived_keys
from tol_dagster.devtools.sample import build_sample
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import DEFAULT_REPO_ID
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
CONFIG = DEFAULT_CONFIG
OTHER = "bioclip-2.5-vith14_float16"
CONFIGS = (CONFIG, OTHER)
ROWS = 3000
#: Every wait together, from the first process start (teardown excluded). The test spends about
#: 100 CPU-seconds, and two derived runs more; on two cores shared with the rest of the suite
#: it took up to ~190 s without those.
BUDGET_S = 300.0


def _instance_yaml(dagster_home: Path, storage: str) -> None:
    """The repo's dagster.yaml, unchanged but for a 1 s queue poll (default 5 s) to save time,
    plus PostgreSQL storage as `defs.instance` renders it when `storage` says so."""
    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    if storage == "postgres":
        settings["storage"] = {"postgres": {"postgres_url": {"env": PG_URL_VAR}}}
    settings["run_coordinator"] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings))


def _reencode(path: Path, scratch: Path) -> None:
    """Upstream re-encodes a file: same rows, same values, same order, new bytes.

    (Re-embedding rows that exist is refused by `emb_unchanged_for_existing_uuids` unless a
    user accepts it, which the sensor never does.) The row count is unchanged, so the card's
    count stays right; the new file replaces the old in one rename, so the Hub never shows a
    half-written file.
    """
    table = pq.read_table(path)
    pq.write_table(
        table,
        scratch,
        row_group_size=500,
        compression="zstd",
        compression_level=1,
        use_dictionary=False,
    )
    os.replace(scratch, path)


def _hub_head(endpoint: str) -> str:
    return str(http_json(f"{endpoint}/api/datasets/{DEFAULT_REPO_ID}/revision/main")["sha"])


def _mirror_matches(layout: Layout, config: str, files: dict[str, str]) -> Manifest | None:
    """The manifest, once it lists exactly `files` (name -> sha256) and the mirror holds them."""
    manifest = load_manifest(layout, config)
    if manifest is None or {e.name: e.sha256 for e in manifest.entries} != files:
        return None
    mirror = layout.mirror_dir(config)
    if {p.name: sha256_file(p) for p in mirror.glob("*.parquet")} != files:
        return None
    return manifest


def _upstream_files(hub_root: Path, config: str) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted((hub_root / config).glob("*.parquet"))}


@dataclass(frozen=True)
class RunTimes:
    run_id: str
    resync: str | None
    status: dg.DagsterRunStatus
    launched: float  # when the queue let it go (RUN_STARTING)
    ended: float


def _run_times(instance: dg.DagsterInstance, run_ids: list[str]) -> list[RunTimes]:
    times = []
    for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids)):
        run = record.dagster_run
        starting = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
        times.append(
            RunTimes(
                run.run_id,
                run.tags.get(RESYNC_TAG),
                run.status,
                starting[0].timestamp if starting else float("nan"),
                record.end_time or float("nan"),
            )
        )
    return sorted(times, key=lambda t: t.launched)


def _derived_follow(
    instance: dg.DagsterInstance, layout: Layout, config: str
) -> tuple[Manifest, list[dg.EventLogEntry]] | None:
    """The manifest and the latest materializations of `config`'s derived tables, once each of
    these read the published generation (their data version) in a run the automation launched."""
    manifest = load_manifest(layout, config)
    if manifest is None:
        return None
    events = []
    for key in derived_keys(config):
        event = instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        if event is None or materialization is None:
            return None
        if (materialization.tags or {}).get("dagster/data_version") != manifest.generation:
            return None
        run = instance.get_run_by_id(event.run_id)
        if run is None or run.tags.get("dagster/sensor_name") != AUTOMATION_SENSOR:
            return None
        events.append(event)
    return manifest, events


def _finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
  }
}"""

START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}"""

SENSOR_ID = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id } ... on Error { message } }
}"""

STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on Error { message }
  }
}"""


def _start_sensor(graphql: str, name: str) -> None:
    selector = {**LOCATION, "sensorName": name}
    answer = http_json(graphql, {"query": START_SENSOR, "variables": {"selector": selector}})
    state = (answer.get("data") or {}).get("startSensor") or {}
    assert state.get("sensorState", {}).get("status") == "RUNNING", f"startSensor {name}: {answer}"


def _stop_sensor(graphql: str, name: str) -> None:
    selector = {**LOCATION, "sensorName": name}
    answer = http_json(graphql, {"query": SENSOR_ID, "variables": {"selector": selector}})
    sensor = (answer.get("data") or {}).get("sensorOrError") or {}
    assert "id" in sensor, f"sensor {name}: {answer}"
    answer = http_json(graphql, {"query": STOP_SENSOR, "variables": {"id": sensor["id"]}})
    state = ((answer.get("data") or {}).get("stopSensor") or {}).get("instigationState") or {}
    assert state.get("status") == "STOPPED", f"stopSensor {name}: {answer}"


#: The job the UI's Materialize button launches for a selection of assets.
UI_ASSET_JOB = "__ASSET_JOB"


def _launch_resync(graphql: str, config: str, *, like_the_ui: bool = False) -> str:
    """Queue a resync of `config`: the sensor's selection and the tag the queue limits on, or
    (`like_the_ui`) the same selection in Dagster's asset job with no tag at all."""
    params = {
        "selector": {
            **LOCATION,
            "jobName": UI_ASSET_JOB if like_the_ui else RESYNC_JOB,
            "assetSelection": [{"path": key.path} for key in resync_keys(config)],
            "assetCheckSelection": [
                {"assetKey": {"path": check.asset_key.path}, "name": check.name}
                for check in resync_check_keys(config)
            ],
        },
        "executionMetadata": {
            "tags": [] if like_the_ui else [{"key": RESYNC_TAG, "value": config}]
        },
    }
    answer = http_json(graphql, {"query": LAUNCH_RUN, "variables": {"params": params}})
    result = (answer.get("data") or {}).get("launchRun") or {}
    assert result.get("__typename") == "LaunchRunSuccess", f"launchRun for {config}: {answer}"
    assert result["run"]["status"] == "QUEUED", result
    return str(result["run"]["runId"])


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The instance's storage; for PostgreSQL its URL is in this process's environment (which
    the processes started here inherit)."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    with pg_database() as url:
        monkeypatch.setenv(PG_URL_VAR, url)
        yield "postgres"


@pytest.fixture
def stack(tmp_path: Path, storage: str) -> Iterator[Stack]:
    yield from running(tmp_path / "logs", BUDGET_S)


@pytest.mark.timeout(BUDGET_S + 120)
def test_daemon_resyncs_the_mirror_and_serializes_resyncs_per_config(
    stack: Stack, storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_root = tmp_path / "hub"
    build_sample(hub_root, rows=ROWS, files=3, seed=7, config=CONFIG, row_group_size=500)
    build_sample(hub_root, rows=ROWS, files=1, seed=7, config=OTHER, row_group_size=500)
    home, dagster_home = tmp_path / "tol_home", tmp_path / "dagster_home"
    _instance_yaml(dagster_home, storage)
    layout = Layout(home)

    stack.start(
        "hub",
        [str(BIN / "python"), "-m", "tol_dagster.devtools.localhub", str(hub_root), "--port", "0"],
        dict(os.environ),
    )
    endpoint = endpoint_of(stack)
    env = {
        **os.environ,
        "TOL_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "TOL_HUB_ENDPOINT": endpoint,
        "TOL_CONFIGS": ",".join(CONFIGS),
        "TOL_SENSOR_MIN_INTERVAL_S": "5",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    graphql = f"http://127.0.0.1:{port}/graphql"
    workspace = str(REPO_ROOT / "workspace.yaml")
    stack.start(
        "webserver",
        [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
        env,
    )
    stack.wait_for(
        "the webserver to load the code location", lambda: location_loaded(stack, graphql)
    )

    # Summaries, index and slices follow every published mirror (issue 4): not the subject of
    # the queue's part of this test, and their runs would only compete for the two cores. The
    # automation is turned on once the queued resyncs are done; the slices stay off.
    _stop_sensor(graphql, "mirror_change_sensor")
    _stop_sensor(graphql, AUTOMATION_SENSOR)
    # What `make dev` does before starting Dagster: the pools' limits are on the instance
    # before the queue's first pass (dagster.yaml's default_limit alone comes one pass late).
    with dg.DagsterInstance.from_config(str(dagster_home)) as setup:
        ensure_resync_pools(setup, CONFIGS)
    # Queued before the daemon exists, so its queue sees all three in its first pass. The
    # second carries no tol/resync tag (the UI's Materialize): only the pool can hold it.
    first = _launch_resync(graphql, CONFIG)
    second = _launch_resync(graphql, CONFIG, like_the_ui=True)
    other = _launch_resync(graphql, OTHER)
    stack.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env)

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    try:
        queued = [first, second, other]

        def all_finished() -> list[RunTimes] | None:
            runs = instance.get_runs(filters=dg.RunsFilter(run_ids=queued))
            return _run_times(instance, queued) if all(r.is_finished for r in runs) else None

        times = stack.wait_for("the three queued resyncs to finish", all_finished)
        failed = [t for t in times if t.status != dg.DagsterRunStatus.SUCCESS]
        if failed:
            stack.fail(f"queued resyncs did not succeed: {failed}")
        by_id = {t.run_id: t for t in times}
        a, b = sorted((by_id[first], by_id[second]), key=lambda t: t.launched)
        assert by_id[second].resync is None, "the UI-style run must carry no tol/resync tag"
        assert b.launched >= a.ended, (
            f"two resyncs of {CONFIG} overlapped: {a} and {b}; the pool tol_resync_<config> "
            "(limit 1, granularity run) must hold a run whoever launched it"
        )
        assert by_id[other].launched < a.ended, (
            f"the resync of {OTHER} waited for {CONFIG}'s ({by_id[other]} vs {a}): the limit "
            "must be per config, not global"
        )
        published = {c: _mirror_matches(layout, c, _upstream_files(hub_root, c)) for c in CONFIGS}
        assert all(published.values()), f"a mirror differs from upstream after resyncs: {published}"

        # The automation, once on, builds the derived tables of the mirrors published before.
        _start_sensor(graphql, AUTOMATION_SENSOR)
        caught_up = {
            config: stack.wait_for(
                f"the automation to build the derived tables of {config}'s mirror",
                lambda config=config: _derived_follow(instance, layout, config),
            )
            for config in CONFIGS
        }

        # The user's story: turn the sensor on, upstream changes, the daemon catches up.
        _start_sensor(graphql, "upstream_change_sensor")
        edited = hub_root / CONFIG / "train-00001-of-00003.parquet"
        before = sha256_file(edited)
        _reencode(edited, tmp_path / "edited.parquet")
        upstream = _upstream_files(hub_root, CONFIG)
        assert upstream[edited.name] != before
        head = _hub_head(endpoint)

        manifest = stack.wait_for(
            f"the mirror of {CONFIG} to reach the edited file's sha256 {upstream[edited.name][:12]}",
            lambda: _mirror_matches(layout, CONFIG, upstream),
        )
        assert manifest.upstream_commit == head
        assert manifest.total_rows == ROWS

        sensor_runs = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/sensor_name": "upstream_change_sensor"})
        )
        assert [(r.tags.get(RESYNC_TAG), r.tags.get("tol/commit")) for r in sensor_runs] == [
            (CONFIG, head)
        ], (
            "the sensor must request exactly one resync, of the edited config, pinned to the new head"
        )
        sensor_run = stack.wait_for(
            "the sensor's run to finish", lambda: _finished(instance, sensor_runs[0].run_id)
        )
        assert sensor_run.status == dg.DagsterRunStatus.SUCCESS, sensor_run.status
        assert load_manifest(layout, OTHER) == published[OTHER], (
            f"{OTHER} did not change upstream, yet its mirror changed"
        )

        resyncs = _run_times(instance, [first, second, sensor_run.run_id])
        for earlier, later in itertools.pairwise(resyncs):
            assert later.launched >= earlier.ended, (
                f"resyncs of {CONFIG} overlapped: {earlier}, {later}"
            )

        # The derived tables follow the new generation by themselves, after its mirror.
        followed, events = stack.wait_for(
            f"the automation to rebuild the derived tables of {CONFIG} from {manifest.generation}",
            lambda: _derived_follow(instance, layout, CONFIG),
        )
        assert followed.generation == manifest.generation != caught_up[CONFIG][0].generation
        mirror_event = instance.get_latest_materialization_event(asset_key(CONFIG, "mirror"))
        assert mirror_event is not None and mirror_event.run_id == sensor_run.run_id
        assert all(event.timestamp > mirror_event.timestamp for event in events)
        assert _derived_follow(instance, layout, OTHER) == caught_up[OTHER], (
            f"{OTHER}'s mirror did not change, yet its derived tables were rebuilt"
        )
    finally:
        instance.dispose()

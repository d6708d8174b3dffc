"""Instance storage on PostgreSQL (`TOL_DAGSTER_PG_URL`): runs, event logs, schedules and
sensor state live in the database, so any process pointed at it (another DAGSTER_HOME, another
machine) shares them; and the resync lease lives there too, across sessions and processes.
The webserver and the daemon on it: test_e2e_daemon.py's PostgreSQL run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from processes import free_port
from resync_testing import CONFIG, User, dagster_home, upstream_files, user
from service_testing import pg_database
from together import at_the_same_instant

from tol_dagster.defs import instance as instance_module
from tol_dagster.defs.mirror.resync_slot import (
    ensure_resync_pools,
    resync_lease,
    resync_pool,
)
from tol_dagster.errors import ServiceUnreachable
from tol_dagster.resync.shared_lease import pg_lease
from tol_dagster.settings import Settings

__all__ = ["dagster_home", "user"]  # fixtures, imported to be found

HOLD = """
import sys
from tol_dagster.resync.shared_lease import pg_lease
with pg_lease(sys.argv[1], sys.argv[2], "run run-1", print):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with pg_database() as url:
        monkeypatch.setenv("TOL_DAGSTER_PG_URL", url)
        yield url


def _instance_at(home: Path) -> dg.DagsterInstance:
    """A process's own DAGSTER_HOME with the project's yaml for PostgreSQL storage."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        instance_module.render_instance_yaml(Settings.from_env().cluster)
    )
    return dg.DagsterInstance.from_config(str(home))


def _sensor_state(name: str) -> InstigatorState:
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=__file__), location_name="tol_dagster"
    )
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "__repository__"), name)
    return InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)


def test_runs_events_pools_and_sensor_state_are_shared_through_postgres(
    user: User, pg_url: str, tmp_path: Path
) -> None:
    outcome = user.sync()
    assert outcome.code == 0, outcome.err

    with _instance_at(tmp_path / "elsewhere") as other:  # another DAGSTER_HOME, same database
        assert type(other.run_storage).__name__ == "PostgresRunStorage"
        assert type(other.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(other.schedule_storage).__name__ == "PostgresScheduleStorage"
        [run] = other.get_runs()
        assert run.run_id in outcome.run_ids and run.status == dg.DagsterRunStatus.SUCCESS
        assert other.get_latest_materialization_event(dg.AssetKey(["tol", CONFIG, "mirror"]))
        limits = {p.name: p.limit for p in other.event_log_storage.get_pool_limits()}
        assert limits[resync_pool(CONFIG)] == 1  # set by the sync, seen here
        other.add_instigator_state(_sensor_state("upstream_change_sensor"))

    with user.instance() as mine:  # the sync's DAGSTER_HOME sees the state stored elsewhere
        states = mine.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        assert [s.name for s in states] == ["upstream_change_sensor"]
    assert not list(user.dagster_home.glob("*.db")) and not (user.dagster_home / "history").exists()
    assert user.layout.mirror_dir(CONFIG).is_dir()
    assert upstream_files(user.root)


def test_the_resync_lease_waits_across_postgres_sessions_and_dies_with_its_holder(
    pg_url: str, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, pg_url, CONFIG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        said: list[str] = []
        got = threading.Event()

        def take() -> None:
            layout = Settings.from_env({"TOL_HOME": str(tmp_path)}).layout
            with resync_lease(layout, CONFIG, "run-2", said.append, pg_url):
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        time.sleep(1.5)
        assert not got.is_set(), "the lease was taken while another session held it"
        assert said and "waiting for resync run run-1 (PostgreSQL session" in said[0], said
        holder.kill()  # SIGKILL: PostgreSQL ends the session, and the lock with it
        taker.join(timeout=30)
        assert got.is_set(), "the lease was not freed when its holder died"
    finally:
        holder.kill()
        holder.wait()


def test_syncs_setting_a_new_pool_at_the_same_instant_all_succeed_with_one_slot(
    pg_url: str, tmp_path: Path
) -> None:
    """Two `tol-dagster sync` started together both find the pool missing and set it: Dagster
    inserts its row after a read, so all but one used to fail on the row's unique key (the
    sync then exited 70). Four instances, as four processes would, on ten new pools."""
    instances = [_instance_at(tmp_path / f"home-{n}") for n in range(4)]
    configs = [f"config-{n}" for n in range(10)]
    failures: list[BaseException] = []
    try:
        for config in configs:
            failures += at_the_same_instant(
                [partial(ensure_resync_pools, instance, [config]) for instance in instances]
            )
        storage = instances[0].event_log_storage
        limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
        slots = [storage.get_concurrency_info(resync_pool(c)).slot_count for c in configs]
    finally:
        for instance in instances:
            instance.dispose()
    assert not failures, failures[:2]
    assert [limits.get(resync_pool(c)) for c in configs] == [1] * len(configs)
    assert slots == [1] * len(configs), "a pool of limit 1 holds one slot"


def test_an_unreachable_database_names_it_with_its_password_masked() -> None:
    with (
        pytest.raises(ServiceUnreachable, match=r"postgresql://tol:\*\*\*@127.0.0.1:9/") as down,
        pg_lease("postgresql://tol:hunter2@127.0.0.1:9/none", CONFIG, "run x", print),
    ):
        pass
    assert "hunter2" not in str(down.value) and down.value.exit_code == 3


def test_the_sqlalchemy_scheme_the_settings_accept_reaches_the_database_too() -> None:
    """`postgresql+psycopg2://` (SQLAlchemy's, which Dagster's storage reads) was handed to
    psycopg2 as is: "invalid dsn", an internal error (70) quoting the password."""
    with (
        pytest.raises(ServiceUnreachable, match=r"postgresql\+psycopg2://tol:\*\*\*@") as down,
        pg_lease("postgresql+psycopg2://tol:hunter2@127.0.0.1:9/none", CONFIG, "run x", print),
    ):
        pass
    assert "hunter2" not in str(down.value) and down.value.exit_code == 3


def test_a_sync_whose_database_is_down_exits_3_naming_it(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_DAGSTER_PG_URL", f"postgresql://tol:hunter2@127.0.0.1:{free_port()}/x")

    outcome = user.sync()

    assert outcome.code == 3, outcome.err
    first = outcome.err.splitlines()[0]
    assert (
        "PostgreSQL at postgresql://tol:***@127.0.0.1:" in first and "TOL_DAGSTER_PG_URL" in first
    )
    assert "hunter2" not in outcome.text

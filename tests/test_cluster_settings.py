"""The cluster settings: how the variables are read and refused, what logs may show of them,
and the instance yaml each mode gets (valid for Dagster, no password on disk)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import serialize_value

from tol_dagster import cluster_settings
from tol_dagster.cluster_settings import ClusterSettings, mask, require_extra
from tol_dagster.definitions import build_definitions
from tol_dagster.defs import instance
from tol_dagster.defs.mirror.jobs import RESYNC_JOB
from tol_dagster.defs.published.jobs import CATALOG_JOB, DERIVED_JOB
from tol_dagster.defs.resources import ConfigSource
from tol_dagster.errors import SettingsError
from tol_dagster.settings import Settings

PG = "postgresql://tol:s3cret-pw@db.example:5432/dagster"


def test_defaults_run_everything_in_one_process_on_sqlite() -> None:
    cluster = ClusterSettings.from_env({})

    assert cluster.pg_url is None
    assert cluster.executor == "in_process" and not cluster.distributed
    assert cluster.workers == (os.cpu_count() or 1)
    assert cluster.celery_broker is None and cluster.celery_backend is None
    assert Settings.from_env({}).cluster == cluster


def test_celery_defaults_to_the_local_rabbitmq_and_rpc_results() -> None:
    cluster = ClusterSettings.from_env({"TOL_EXECUTOR": "celery"})

    assert cluster.celery_broker == "amqp://guest@127.0.0.1:5672//"
    assert cluster.celery_backend == "rpc://"


def test_every_variable_is_read() -> None:
    env = {
        "TOL_DAGSTER_PG_URL": PG,
        "TOL_EXECUTOR": "Multiprocess",
        "TOL_WORKERS": "3",
        "TOL_CELERY_BROKER": "redis://127.0.0.1:6379/4",
        "TOL_CELERY_BACKEND": "redis://127.0.0.1:6379/5",
        "TOL_CELERY_QUEUE": "tol-a",
    }
    cluster = Settings.from_env(env).cluster

    assert cluster == ClusterSettings(
        pg_url=PG,
        executor="multiprocess",
        workers=3,
        celery_broker="redis://127.0.0.1:6379/4",
        celery_backend="redis://127.0.0.1:6379/5",
        celery_queue="tol-a",
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TOL_EXECUTOR", "dask", "in_process, multiprocess, celery, k8s"),
        ("TOL_WORKERS", "0", "1..256"),
        ("TOL_WORKERS", "two", "whole number"),
        ("TOL_DAGSTER_PG_URL", "mysql://u@h/db", "postgresql://user@host:port/db"),
        ("TOL_DAGSTER_PG_URL", "postgresql://127.0.0.1/db", "no PostgreSQL user"),
        ("TOL_DAGSTER_PG_URL", "postgresql://u@h:5432/", "names no database"),
        ("TOL_DAGSTER_PG_URL", "postgresql://u@h:port/db", "not a URL"),
        ("TOL_CELERY_BROKER", "http://broker", "amqp://"),
        ("TOL_CELERY_BACKEND", "s3://bucket", "rpc://"),
        ("TOL_CELERY_QUEUE", "a queue", "not a queue name"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=name) as refused:
        Settings.from_env({"TOL_EXECUTOR": "celery", name: value})

    assert says in str(refused.value)
    assert refused.value.exit_code == 2


def test_a_password_is_masked_wherever_it_is_shown() -> None:
    env = {
        "TOL_DAGSTER_PG_URL": PG,
        "TOL_EXECUTOR": "celery",
        "TOL_CELERY_BROKER": "amqp://guest:hunter2@mq:5672//",
    }
    shown = ClusterSettings.from_env(env).shown()

    assert "s3cret-pw" not in str(shown) and "hunter2" not in str(shown)
    assert shown["TOL_DAGSTER_PG_URL"] == "postgresql://tol:***@db.example:5432/dagster"
    assert shown["TOL_CELERY_BROKER"] == "amqp://guest:***@mq:5672//"
    assert mask("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db"
    # Where a URL parser ends the host part before the `@`, it finds no password: masked too.
    for url, masked in [
        ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("amqp://guest:pa?ss@mq:5999//", "amqp://guest:***@mq:5999//"),
        ("redis://:pa#ss@127.0.0.1:5999/0", "redis://:***@127.0.0.1:5999/0"),
        ("u:hunter2@h/db", "u:***@h/db"),
    ]:
        assert mask(url) == masked
    for name, value in [
        ("TOL_DAGSTER_PG_URL", "postgresql://u:pa/hunter2@h:5432/db"),
        ("TOL_DAGSTER_PG_URL", "u:hunter2@h:5432/db"),
    ]:
        with pytest.raises(SettingsError) as leaked:
            Settings.from_env({name: value})
        assert "hunter2" not in str(leaked.value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"TOL_DAGSTER_PG_URL": "postgresql://u:hunter2@h:nan/db"})
    assert "hunter2" not in str(refused.value)


def test_a_missing_extra_names_the_install_command() -> None:
    with pytest.raises(SettingsError, match=r"pip install 'tol-dagster\[cluster\]'"):
        require_extra("dagster_no_such_integration")
    assert require_extra("dagster_celery").__name__ == "dagster_celery"


def _written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return instance.ensure_dagster_home(Settings.from_env({"TOL_HOME": str(tmp_path), **env}))


@pytest.mark.parametrize("mode", ["sqlite", "postgres"])
def test_each_mode_s_instance_yaml_passes_dagster_s_own_schema(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"TOL_DAGSTER_PG_URL": PG} if mode == "postgres" else {}
    home = _written(tmp_path, monkeypatch, env)

    config = dagster_instance_config(str(home))[0]  # raises on a value the schema refuses

    assert config["concurrency"]["pools"]["default_limit"] == 1
    storage = yaml.safe_load((home / "dagster.yaml").read_text()).get("storage")
    if mode == "postgres":
        assert storage == {"postgres": {"postgres_url": {"env": "TOL_DAGSTER_PG_URL"}}}
    else:
        assert storage is None  # SQLite under DAGSTER_HOME, as always


def test_the_database_password_is_never_written_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _written(tmp_path, monkeypatch, {"TOL_DAGSTER_PG_URL": PG})

    for path in home.rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path


def test_the_instance_yaml_follows_the_mode_but_keeps_a_user_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _written(tmp_path, monkeypatch, {"TOL_DAGSTER_PG_URL": PG}) / "dagster.yaml"
    assert "postgres_url" in target.read_text()

    monkeypatch.delenv("TOL_DAGSTER_PG_URL")
    _written(tmp_path, monkeypatch, {})
    assert "postgres_url" not in target.read_text()

    target.write_text("telemetry:\n  enabled: false\n")
    _written(tmp_path, monkeypatch, {"TOL_DAGSTER_PG_URL": PG})
    assert target.read_text() == "telemetry:\n  enabled: false\n"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("run_storage: [\n  cut", "expected ',' or ']'"),
        (
            "storage:\n  sqlite:\n    base_dir: 5\nbogus_key: 1\n",
            'unexpected config entry "bogus_key"',
        ),
    ],
)
def test_a_user_s_broken_instance_yaml_is_bad_settings_named_in_a_line(
    text: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _written(tmp_path, monkeypatch, {}) / "dagster.yaml"
    target.write_text(text)
    with pytest.raises(SettingsError) as raised:
        instance.open_instance(Settings.from_env({"TOL_HOME": str(tmp_path)}))
    message = str(raised.value)
    assert f"{target} is not a Dagster instance configuration" in message and said in message
    assert "delete it and tol-dagster writes its own" in message
    assert len(message) < 500 and "Expected:" not in message, "not Dagster's whole schema"
    assert raised.value.exit_code == 2 and target.read_text() == text, "the user's file is left"


def test_the_variables_are_named_once() -> None:
    names = {
        cluster_settings.PG_URL_VAR,
        cluster_settings.EXECUTOR_VAR,
        cluster_settings.WORKERS_VAR,
        cluster_settings.BROKER_VAR,
        cluster_settings.BACKEND_VAR,
        cluster_settings.QUEUE_VAR,
    }
    assert names == set(ClusterSettings.from_env({}).shown()) - {"storage"}


@pytest.mark.parametrize("executor", ["in_process", "multiprocess", "celery", "k8s"])
def test_every_job_takes_the_executor_tol_executor_names(executor: str, tmp_path: Path) -> None:
    env = {
        "TOL_HOME": str(tmp_path),
        "TOL_EXECUTOR": executor,
        "TOL_CELERY_BROKER": "amqp://guest:hunter2@mq:5672//",
    }
    defs = build_definitions(Settings.from_env(env), ConfigSource(env))

    jobs = [defs.resolve_job_def(name) for name in (RESYNC_JOB, DERIVED_JOB, CATALOG_JOB)]

    assert {job.executor_def.name for job in jobs} == {executor}
    # What the instance stores of a run's job (its snapshot) never holds the broker's password.
    assert "hunter2" not in serialize_value(jobs[0].get_job_snapshot())


def _before_this_version() -> str:
    """The packaged yaml of the version before this one: this one's without its stamp and
    without `python_logs`, which this version added."""
    text = instance.INSTANCE_YAML.read_text()
    start = text.index("# Our code's warnings")
    return text[:start] + text[text.index("\nsensors:\n", start) + 1 :]


@pytest.mark.parametrize("env", [{}, {"TOL_DAGSTER_PG_URL": PG}])
def test_an_earlier_version_s_unedited_yaml_is_replaced_by_this_one_s(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _written(tmp_path, monkeypatch, env) / "dagster.yaml"
    wanted = target.read_text()
    assert "python_logs" in wanted and wanted.splitlines()[-1].startswith(
        "# Written by tol-dagster"
    )

    earlier = _before_this_version() + (instance.POSTGRES_STORAGE if env else "")
    target.write_text(earlier)
    _written(tmp_path, monkeypatch, env)
    assert target.read_text() == wanted, "the queue limits and logs of an upgrade reach the home"

    stamped = "telemetry:\n  enabled: false\n"  # a later version's, stamped as ours
    target.write_text(f"{stamped}{instance._STAMP}{hashlib.sha256(stamped.encode()).hexdigest()}\n")
    _written(tmp_path, monkeypatch, env)
    assert target.read_text() == wanted


def test_a_yaml_of_ours_the_user_edited_is_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _written(tmp_path, monkeypatch, {}) / "dagster.yaml"
    edited = target.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 9")
    target.write_text(edited)
    _written(tmp_path, monkeypatch, {"TOL_DAGSTER_PG_URL": PG})
    assert target.read_text() == edited

    target.write_text(
        _before_this_version().replace("max_concurrent_runs: 4", "max_concurrent_runs: 9")
    )
    _written(tmp_path, monkeypatch, {})
    assert "max_concurrent_runs: 9" in target.read_text()

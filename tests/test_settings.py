"""Settings come from the environment with defaults that work; bad values name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tol_dagster.errors import SettingsError
from tol_dagster.settings import DEFAULT_REPO_ID, PUBLIC_HUB, Settings, hub_token


def test_defaults_point_at_the_public_hub_and_a_local_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.hub_endpoint == PUBLIC_HUB
    assert settings.repo_id == DEFAULT_REPO_ID
    assert settings.configs == ("bioclip-2_float16",)
    assert settings.home == (tmp_path / "tol_data").resolve()
    assert settings.generation_grace_s == 3600


def test_relative_home_is_resolved_once_to_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"TOL_HOME": "data/here"})
    monkeypatch.chdir("/")
    assert settings.home.is_absolute()
    assert settings.layout.mirror_dir("c") == tmp_path.resolve() / "data/here/mirror/c"
    assert settings.layout.dagster_home() == tmp_path.resolve() / "data/here/dagster"


def test_configs_are_comma_separated() -> None:
    settings = Settings.from_env({"TOL_CONFIGS": "bioclip-2_float16, bioclip-2.5-vith14_float16"})
    assert settings.configs == ("bioclip-2_float16", "bioclip-2.5-vith14_float16")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TOL_HUB_ENDPOINT", "huggingface.co", "http(s) URL"),
        ("TOL_REPO_ID", "no-slash", "owner/name"),
        ("TOL_CONFIGS", "a,,b/c", "comma-separated"),
        ("TOL_CONFIGS", "x,x", "twice"),
        ("TOL_MAX_PARALLEL_DOWNLOADS", "lots", "whole number"),
        ("TOL_MAX_PARALLEL_DOWNLOADS", "0", "out of range"),
        ("TOL_SENSOR_MIN_INTERVAL_S", "-5", "out of range"),
        ("TOL_SENSOR_RETRY_DELAY_S", "-1", "out of range"),
        ("TOL_SENSOR_RETRY_DELAY_S", "10m", "whole number"),
        ("TOL_MAX_ROW_LOSS", "1.5", "share from 0 to 1"),
        ("TOL_MAX_ROW_LOSS", "ten percent", "share from 0 to 1"),
        ("TOL_GENERATION_GRACE_S", "-1", "out of range"),
        ("TOL_GENERATION_GRACE_S", "an hour", "whole number"),
        ("TOL_MAX_RETRY_WAIT_S", "5m", "whole number"),
        ("TOL_MAX_RETRY_WAIT_S", "-1", "out of range"),
        ("TOL_SYNC_DEADLINE_S", "0", "out of range"),
        ("TOL_SYNC_DEADLINE_S", "1h", "whole number"),
        ("TOL_STALL_TIMEOUT_S", "0", "out of range"),
        ("TOL_STALL_TIMEOUT_S", "2.5", "whole number"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_expects(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value)
    assert expected in str(raised.value)


def test_knobs_are_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "TOL_HOME": str(tmp_path),
            "TOL_MAX_PARALLEL_DOWNLOADS": "8",
            "TOL_SENSOR_MIN_INTERVAL_S": "30",
            "TOL_SENSOR_RETRY_DELAY_S": "0",
            "TOL_MAX_ROW_LOSS": "0.05",
            "TOL_GENERATION_GRACE_S": "0",
        }
    )
    assert (
        settings.max_parallel_downloads,
        settings.sensor_min_interval_s,
        settings.sensor_retry_delay_s,
        settings.max_row_loss,
        settings.generation_grace_s,
    ) == (8, 30, 0, 0.05, 0)
    assert Settings.from_env({}).sensor_retry_delay_s == 600


def test_waits_default_to_bounded_except_the_deadline() -> None:
    settings = Settings.from_env({})
    assert (settings.max_retry_wait_s, settings.sync_deadline_s, settings.stall_timeout_s) == (
        300,
        None,
        120,
    )
    bounded = Settings.from_env(
        {"TOL_MAX_RETRY_WAIT_S": "5", "TOL_SYNC_DEADLINE_S": "3600", "TOL_STALL_TIMEOUT_S": "30"}
    )
    assert (bounded.max_retry_wait_s, bounded.sync_deadline_s, bounded.stall_timeout_s) == (
        5,
        3600,
        30,
    )


def test_the_hub_resource_gives_its_clients_the_bounded_waits() -> None:
    from tol_dagster.defs.resources import resources_from
    from tol_dagster.hub.retry import RetryPolicy

    settings = Settings.from_env(
        {"TOL_MAX_RETRY_WAIT_S": "5", "TOL_SYNC_DEADLINE_S": "3600", "TOL_STALL_TIMEOUT_S": "30"}
    )
    hub = resources_from(settings)["hub"]
    policy = hub.client().retry  # type: ignore[attr-defined]
    assert (policy.max_server_wait_s, policy.deadline_s, policy.stall_timeout_s) == (5, 3600, 30)
    patient = RetryPolicy(attempts=2, max_server_wait_s=600)
    assert hub.client(retry=patient).retry.max_server_wait_s == 5  # type: ignore[attr-defined]
    assert "hf_" not in repr(hub)


def test_token_comes_from_hf_token_or_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hub_token() is None
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert hub_token() == "hf_secret_value"

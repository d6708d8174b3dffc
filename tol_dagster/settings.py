"""Settings read from the environment: the one place that knows the variable names.

Users' scripts rely on these names; a wrong value raises `SettingsError` naming the variable
and what it expected. The token is deliberately not a setting: see `hub_token`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from tol_dagster.cluster_settings import ClusterSettings, mask, parse_int
from tol_dagster.errors import SettingsError
from tol_dagster.schema import CONFIG_NAME, DEFAULT_CONFIG
from tol_dagster.store.hashing import usable_cores
from tol_dagster.store.layout import Layout

PUBLIC_HUB = "https://huggingface.co"
DEFAULT_REPO_ID = "imageomics/TreeOfLife-200M-Embeddings"
DEFAULT_HOME = "./tol_data"
#: The slices published by default, shipped inside the package (so a non-editable install has it).
DEFAULT_SLICES_FILE = Path(str(resources.files("tol_dagster").joinpath("slices.yaml")))

#: The Hub client's environment when it talks to the local Hub (tests, demo, benchmarks). The
#: client reads it once, at import: set it before anything imports huggingface_hub. Telemetry
#: and update checks would otherwise try the public Hub; Xet is never offered locally.
OFFLINE_HF_ENV: dict[str, str] = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "GX_ANALYTICS_ENABLED": "False",
}

#: Longest sync deadline accepted: 30 days (unset means none).
MAX_DEADLINE_S = 30 * 86400

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that work (public Hub, `./tol_data`)."""

    home: Path
    hub_endpoint: str = PUBLIC_HUB
    repo_id: str = DEFAULT_REPO_ID
    configs: tuple[str, ...] = (DEFAULT_CONFIG,)
    max_parallel_downloads: int = 4
    sensor_min_interval_s: int = 60
    #: The upstream sensor's second attempt at a failed resync waits this long, the third 4×.
    sensor_retry_delay_s: int = 600
    max_row_loss: float = 0.01
    slices_file: Path = DEFAULT_SLICES_FILE
    generation_grace_s: int = 3600
    max_retry_wait_s: int = 300
    sync_deadline_s: int | None = None
    stall_timeout_s: int = 120
    #: A mirror not published for longer shows as stale (Dagster's freshness) in the UI.
    freshness_days: int = 7
    #: Files per step of per-file work (None: chosen from the files' sizes and the executor).
    step_batch_files: int | None = None
    #: Processes a whole rank's slices are published with (`slices.rank_workers`).
    rank_workers: int = field(default_factory=lambda: default_rank_workers())
    #: The instance's database, the executor and the Celery broker (`cluster_settings`).
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def layout(self) -> Layout:
        return Layout(self.home)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default `os.environ`); relative `TOL_HOME` becomes absolute."""
        env = os.environ if env is None else env
        return cls(
            home=resolve_home(env.get("TOL_HOME") or DEFAULT_HOME),
            hub_endpoint=parse_endpoint(
                "TOL_HUB_ENDPOINT", env.get("TOL_HUB_ENDPOINT") or PUBLIC_HUB
            ),
            repo_id=parse_repo_id("TOL_REPO_ID", env.get("TOL_REPO_ID") or DEFAULT_REPO_ID),
            configs=parse_configs("TOL_CONFIGS", env.get("TOL_CONFIGS") or DEFAULT_CONFIG),
            max_parallel_downloads=parse_int(
                "TOL_MAX_PARALLEL_DOWNLOADS", env.get("TOL_MAX_PARALLEL_DOWNLOADS"), 4, 1, 64
            ),
            sensor_min_interval_s=parse_int(
                "TOL_SENSOR_MIN_INTERVAL_S", env.get("TOL_SENSOR_MIN_INTERVAL_S"), 60, 1, 86400
            ),
            sensor_retry_delay_s=parse_int(
                "TOL_SENSOR_RETRY_DELAY_S", env.get("TOL_SENSOR_RETRY_DELAY_S"), 600, 0, 86400
            ),
            max_row_loss=parse_share("TOL_MAX_ROW_LOSS", env.get("TOL_MAX_ROW_LOSS"), 0.01),
            slices_file=Path(env.get("TOL_SLICES_FILE") or DEFAULT_SLICES_FILE)
            .expanduser()
            .resolve(),
            generation_grace_s=generation_grace_s(env),
            max_retry_wait_s=parse_int(
                "TOL_MAX_RETRY_WAIT_S", env.get("TOL_MAX_RETRY_WAIT_S"), 300, 0, 86400
            ),
            sync_deadline_s=parse_optional_int(
                "TOL_SYNC_DEADLINE_S", env.get("TOL_SYNC_DEADLINE_S"), 1, MAX_DEADLINE_S
            ),
            stall_timeout_s=parse_int(
                "TOL_STALL_TIMEOUT_S", env.get("TOL_STALL_TIMEOUT_S"), 120, 1, 86400
            ),
            freshness_days=parse_int(
                "TOL_FRESHNESS_DAYS", env.get("TOL_FRESHNESS_DAYS"), 7, 1, 3650
            ),
            step_batch_files=parse_optional_int(
                "TOL_STEP_BATCH_FILES", env.get("TOL_STEP_BATCH_FILES"), 1, 100_000
            ),
            rank_workers=parse_int(
                "TOL_RANK_WORKERS", env.get("TOL_RANK_WORKERS"), default_rank_workers(), 1, 64
            ),
            cluster=ClusterSettings.from_env(env),
        )


def default_rank_workers() -> int:
    """Two processes for a rank pass where two cores are (each holds one slice at a time)."""
    return min(2, usable_cores())


def generation_grace_s(env: Mapping[str, str] | None = None) -> int:
    """TOL_GENERATION_GRACE_S: how long a superseded generation stays readable (its paths, from
    `catalog.mirror_files()`, keep working), on top of while any run of ours still reads it."""
    env = os.environ if env is None else env
    return parse_int(
        "TOL_GENERATION_GRACE_S", env.get("TOL_GENERATION_GRACE_S"), 3600, 0, 10 * 365 * 86400
    )


def resolve_home(value: str) -> Path:
    """Resolve the data home once, so processes started elsewhere (the daemon) see the same;
    SettingsError if it names a file."""
    home = Path(value).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise SettingsError(
            f"TOL_HOME={value!r} is a file, not a folder: point TOL_HOME at a folder (created "
            "if missing) where the mirror and what is published from it live"
        )
    return home


def parse_endpoint(name: str, value: str) -> str:
    """An http(s) URL with a host, a valid port if any, and no credentials: the Hub takes a
    token (`HF_TOKEN`), and the endpoint is shown in logs, errors and metadata."""
    value = value.strip().rstrip("/")
    shown = mask(value)  # never echo a password
    expected = f"expected e.g. {PUBLIC_HUB} or http://127.0.0.1:PORT for the local Hub"
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise SettingsError(f"{name}={shown!r} is not an http(s) URL; {expected}")
    if "@" in value.split("/")[2]:
        raise SettingsError(
            f"{name}={shown!r} holds credentials (user:password@): give the token in HF_TOKEN "
            "(or `hf auth login`) and the URL without them, which logs and metadata show"
        )
    try:
        urlsplit(value).port  # noqa: B018 - parsing the port is the check
    except ValueError as error:
        raise SettingsError(f"{name}={shown!r}: {error}; {expected}") from None
    return value


def parse_repo_id(name: str, value: str) -> str:
    value = value.strip()
    if not _REPO_ID.match(value):
        raise SettingsError(
            f"{name}={value!r} is not a repo id; expected 'owner/name', e.g. {DEFAULT_REPO_ID}"
        )
    return value


def parse_configs(name: str, value: str) -> tuple[str, ...]:
    configs = tuple(part.strip() for part in value.split(",") if part.strip())
    bad = [c for c in configs if not CONFIG_NAME.match(c)]
    if not configs or bad:
        raise SettingsError(
            f"{name}={value!r}: expected a comma-separated list of config folder names "
            f"such as {DEFAULT_CONFIG} (letters, digits, '.', '_', '-')"
        )
    if len(set(configs)) != len(configs):
        raise SettingsError(f"{name}={value!r} names a config twice")
    return configs


def parse_optional_int(name: str, value: str | None, low: int, high: int) -> int | None:
    """A whole number, or None when unset or empty (no limit)."""
    if value is None or value.strip() == "":
        return None
    return parse_int(name, value, low, low, high)


def parse_share(name: str, value: str | None, default: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        share = float(value)
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} is not a number; expected a share from 0 to 1, e.g. 0.01"
        ) from None
    if not 0.0 <= share <= 1.0:
        raise SettingsError(
            f"{name}={value!r} is out of range; expected a share from 0 to 1, e.g. 0.01"
        )
    return share


def hub_token() -> str | None:
    """The Hub token: `HF_TOKEN`, else the one `hf auth login` saved, else None (public repos).

    Read at call time and never stored in settings, resource config or run config, so it
    cannot leak into Dagster's event log or the UI.
    """
    from huggingface_hub import get_token

    return get_token() or None

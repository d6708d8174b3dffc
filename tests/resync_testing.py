"""Helpers shared by the resync and sensor tests: a user's environment (data home, Dagster
instance, local Hub), upstream edits made the way a maintainer makes them, views of the mirror.

The fixtures here are imported by the test modules that use them (`from resync_testing import
...`), as `mirror_testing` is.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.cli.main import main
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.resources import resources_from
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.hub import retry
from tol_dagster.hub.card import card_body, expected_rows, parse_card, render_card, with_config
from tol_dagster.hub.client import HubClient
from tol_dagster.resync.gate import run_gate
from tol_dagster.resync.publish import Published, publish
from tol_dagster.resync.stage import stage
from tol_dagster.resync.state import refresh_remote
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import Settings
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest

CONFIG = DEFAULT_CONFIG
#: Rows per row group of the shared sample (conftest's SMALL_SAMPLE).
ROW_GROUP = 500
#: File kinds the server counts that move file bytes or resolve a file.
FILE_REQUESTS = ("resolve_head", "resolve_get", "lfs_get", "range_requests")


# --- upstream, edited in the Hub's folder -----------------------------------------------------


def upstream_files(root: Path, config: str = CONFIG) -> dict[str, str]:
    """name -> sha256 of the config's parquet files in the Hub's folder."""
    return {p.name: sha256_file(p) for p in sorted((root / config).glob("*.parquet"))}


def upstream_rows(root: Path, config: str = CONFIG) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (root / config).glob("*.parquet"))


def file_names(root: Path, config: str = CONFIG) -> list[str]:
    return sorted(p.name for p in (root / config).glob("*.parquet"))


def replace_upstream(path: Path, write: Callable[[Path], object]) -> None:
    """Replace `path` by what `write(temp)` writes beside the Hub's folder, then rename it in:
    the Hub never lists a half-written file."""
    temp = path.parent.parent.parent / f".{path.name}.writing"
    write(temp)
    os.replace(temp, path)


def write_upstream(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` as upstream writes its files (ZSTD, the sample's row groups)."""
    replace_upstream(
        path, lambda temp: pq.write_table(table, temp, row_group_size=ROW_GROUP, compression="zstd")
    )


def edit_upstream(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    write_upstream(path, edit(pq.read_table(path)))


def drop_last_rows(count: int) -> Callable[[pa.Table], pa.Table]:
    """An edit that keeps the file valid and sorted: its last `count` rows are gone."""
    return lambda table: table.slice(0, table.num_rows - count)


def set_card_rows(root: Path, rows: int | None, config: str = CONFIG) -> None:
    """Edit only the card: `config`'s train size becomes `rows` (None: the card states none)."""
    card = root / "README.md"
    text = card.read_text()
    front = parse_card(text)
    if rows is None:
        infos = [i for i in front.get("dataset_info") or [] if i.get("config_name") != config]
        front = {**front, "dataset_info": infos}
    else:
        front = with_config(front, config, num_examples=rows)
    card.write_text(render_card(front, card_body(text)))


def card_rows(root: Path, config: str = CONFIG) -> int | None:
    return expected_rows(parse_card((root / "README.md").read_text()), config)


def valid_edit(root: Path, name: str, *, source: Path | None = None, drop: int = 3) -> None:
    """Upstream rewrites `name` correctly (from `source`, default the file as it is now): a few
    rows fewer, and the card says so."""
    write_upstream(
        root / CONFIG / name, drop_last_rows(drop)(pq.read_table(source or root / CONFIG / name))
    )
    set_card_rows(root, upstream_rows(root))


# --- the mirror and what is published: views, rot, the audits' checks ---------------------------


@dataclass(frozen=True)
class MirrorView:
    """What a consumer of `<home>/mirror/<config>` sees: the generation and each file's bytes."""

    target: str
    files: dict[str, tuple[str, int]]  # name -> (sha256, inode)

    @property
    def sha256s(self) -> dict[str, str]:
        return {name: sha for name, (sha, _) in self.files.items()}


def mirror_view(layout: Layout, config: str = CONFIG) -> MirrorView:
    link = layout.mirror_dir(config)
    return MirrorView(
        os.readlink(link),
        {p.name: (sha256_file(p), p.stat().st_ino) for p in sorted(link.iterdir())},
    )


def manifest(layout: Layout, config: str = CONFIG) -> Manifest:
    found = load_manifest(layout, config)
    assert found is not None, f"no manifest for {config} under {layout.home}"
    return found


def a_digit_changed(text: str, key: str = "sha256") -> str:
    """`text` with the 11th digit of the first sha256 under `key` changed, as bit rot may leave
    a JSON document of the store: it still parses."""
    found = re.search(f'"{re.escape(key)}": "[0-9a-f]{{10}}', text)
    assert found, key
    at = found.end()
    return text[:at] + ("1" if text[at] == "0" else "0") + text[at + 1 :]


def flip_a_byte(path: Path) -> None:
    """Bit rot inside a published file: one byte in its middle changes, its size and its
    modification time do not."""
    status = path.stat()
    os.chmod(path, status.st_mode | stat.S_IWUSR)
    with open(path, "r+b") as handle:
        handle.seek(status.st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(path, status.st_mode)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def job_evaluations(
    job: str, asset_selection: list[dg.AssetKey] | None = None
) -> list[dg.AssetCheckEvaluation]:
    """The code location's `job` run through Dagster on the user's instance (as a schedule or
    the UI runs it), its check evaluations."""
    settings = Settings.from_env()
    with open_instance(settings) as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(job)
            .execute_in_process(
                instance=instance, raise_on_error=False, asset_selection=asset_selection
            )
        )
    return result.get_asset_check_evaluations()


def job_checks(
    job: str, asset_selection: list[dg.AssetKey] | None = None
) -> dict[str, dg.AssetCheckEvaluation]:
    """`job_evaluations` by check name (for checks that one asset of the job carries)."""
    return {e.check_name: e for e in job_evaluations(job, asset_selection)}


# --- a user's environment -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the user sees of one command: its exit code and its output."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def run_ids(self) -> list[str]:
        return re.findall(r"\[run ([0-9a-f-]{36})\]", self.text)


@dataclass
class User:
    """One user's machine: a data home, a Dagster instance and a local Hub, wired by env vars."""

    hub: LocalHub
    root: Path
    home: Path
    dagster_home: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def layout(self) -> Layout:
        return Layout(self.home)

    @property
    def folder(self) -> Path:
        return self.root / CONFIG

    def tol(self, *argv: str) -> Outcome:
        """`tol-dagster ARGV` in this process, as the console script runs it."""
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return Outcome(code, out, err)

    def sync(self, *flags: str) -> Outcome:
        return self.tol("sync", *flags)

    def requests(self) -> dict[str, int]:
        """Requests the Hub served since the last `reset_counts`, by kind."""
        return {kind: value["count"] for kind, value in self.hub.stats().items()}

    def bytes_served(self, kind: str = "lfs_get") -> int:
        return self.hub.stats()[kind]["bytes"]

    def file_requests(self) -> dict[str, int]:
        counts = self.requests()
        return {kind: counts[kind] for kind in FILE_REQUESTS}

    def reset_counts(self) -> None:
        self.hub.reset()

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))


def _fast_dir() -> str | None:
    """A RAM-backed folder for the Dagster instance when there is one: SQLite commits every event
    with an fsync, which on a shared disk costs more than the whole sync being tested."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@pytest.fixture
def dagster_home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tol-dagster-home-", dir=_fast_dir()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_user(
    hub: LocalHub,
    root: Path,
    home: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> User:
    """Point the command line at `hub` and `home` through the environment, as a user would."""
    for name in list(os.environ):
        if name.startswith("TOL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TOL_HOME", str(home))
    monkeypatch.setenv("TOL_HUB_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("TOL_REPO_ID", hub.repo_id)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return User(hub, root, home, dagster_home, capsys)


def sync_process(*argv: str) -> subprocess.Popen[bytes]:
    """`tol-dagster sync` (or `python ARGV`) in a process of its own (to be killed), its output
    discarded."""
    return subprocess.Popen(
        [sys.executable, *(argv or ("-m", "tol_dagster.cli.main", "sync"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def tick(
    instance: dg.DagsterInstance, sensor: str, settings: Settings, cursor: str | None = None
) -> dg.SensorExecutionData:
    """One tick of the code location's `sensor`, as the daemon evaluates it."""
    definition = build_definitions(settings).resolve_sensor_def(sensor)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources_from(settings)
    )
    return definition.evaluate_tick(context)


# What a run worker does with a run the daemon launched (`dagster api execute_run`): execute the
# created run with the job's executor, no command line about it.
LAUNCHED_RESYNC = f"""
import uuid
from tol_dagster.cli.launch import create_run, execute_created, load_code_location
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.resources import resources_from
from tol_dagster.defs.keys import source_tags
from tol_dagster.defs.mirror.jobs import RESYNC_JOB, resync_run_tags
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.settings import Settings

settings = Settings.from_env()
job = load_code_location(settings).resolve_job_def(RESYNC_JOB)
instance = open_instance(settings)
run = create_run(
    job,
    instance,
    run_id=str(uuid.uuid4()),
    run_config=resync_run_config({CONFIG!r}),
    tags={{**resync_run_tags({CONFIG!r}, None), **source_tags("sensor")}},
    asset_selection=set(resync_keys({CONFIG!r})),
    asset_check_selection=set(resync_check_keys({CONFIG!r})),
)
execute_created(job, run, instance)
"""


def core_sync(layout: Layout, client: HubClient, config: str = CONFIG) -> Published:
    """Sync with the core functions alone (no Dagster run): observe, stage, gate, publish."""
    refresh_remote(layout, client, config)
    state = stage(layout, client, config, log=lambda _: None)
    refused = [r.message for r in run_gate(layout, state, max_row_loss=0.01) if not r.passed]
    assert not refused, refused
    return publish(layout, config, log=lambda _: None)


@pytest.fixture(scope="session")
def synced_home(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home whose mirror holds the sample at the Hub's first commit. Copy before use.

    The Hub's commit ids derive from content, so a Hub over any fresh copy of the sample
    starts at the same commit this mirror holds.
    """
    root = tmp_path_factory.mktemp("synced-hub") / "root"
    shutil.copytree(small_sample, root)
    home = tmp_path_factory.mktemp("synced") / "home"
    with LocalHub(root) as hub:
        core_sync(Layout(home), HubClient(hub.endpoint, hub.repo_id, None))
    return home


@pytest.fixture
def user(
    local_hub: LocalHub,
    hub_root: Path,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> User:
    """A user with an empty data home."""
    return make_user(local_hub, hub_root, tmp_path / "home", dagster_home, monkeypatch, capsys)


@pytest.fixture
def synced(user: User, synced_home: Path) -> User:
    """A user whose mirror already holds upstream's current commit (nothing derived yet); the
    Hub's counters at 0."""
    copy_home(synced_home, user.home, user.hub)
    user.reset_counts()
    return user


def copy_home(synced: Path, home: Path, hub: LocalHub) -> None:
    """A private copy of `synced` (symlinks kept), checked to match what `hub` serves."""
    shutil.copytree(synced, home, symlinks=True)
    assert manifest(Layout(home)).upstream_commit == hub.head_commit(), (
        "the Hub's first commit differs from the synced home's: was the shared sample edited?"
    )


class HubSleeps:
    """The Hub client's waits between retries, recorded and cut to a few ms: retries keep
    their logic (attempts, backoff, `Retry-After`) without costing the test their time."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        time.sleep(min(seconds, 0.005))


@pytest.fixture
def hub_sleeps(monkeypatch: pytest.MonkeyPatch) -> HubSleeps:
    sleeps = HubSleeps()
    monkeypatch.setattr(retry, "time", sleeps)
    return sleeps

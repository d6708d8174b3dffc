"""The state the resync's steps share: upstream's listing and the staged candidate generation.

Small JSON under `Layout.state_dir`, so each step can run in its own process. A staged state is
kept under the key of the run that staged it (its run id), and `publish` takes exactly that key:
a run never publishes what another run staged (see `tol_dagster.defs.resync_slot`). One writer
per config's store at a time: `config_lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tol_dagster.errors import LocalStorageError, StoreError
from tol_dagster.hub.client import HubClient, RemoteConfig, RemoteFile
from tol_dagster.store.durable import file_lock, write_atomic
from tol_dagster.store.generations import pin_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.pins import PinnedGeneration
from tol_dagster.store.rebuildable import read_rebuildable
from tol_dagster.store.staging import stage_path

#: The staged state's key when no run names one (the core functions called directly).
LOCAL_KEY = "local"
#: Staged states kept per config (the newest; older ones are only history).
KEEP_STAGED = 10
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class StagedFile:
    """One file of the candidate generation: kept from the mirror, fetched, or failed."""

    name: str
    path: str
    sha256: str
    size: int
    status: str  # "current" | "fetched" | "failed"
    reason: str | None = None
    rows: int | None = None
    #: Downloaded by this run (a fetched file may have been staged before it: adopted from a
    #: user's folder, or downloaded by a run interrupted since).
    downloaded: bool = False


@dataclass
class StagedState:
    """The candidate generation of one config at one upstream commit."""

    config: str
    repo_id: str
    commit: str
    expected_rows: int | None
    added: list[str]
    changed: list[str]
    removed: list[str]
    files: list[StagedFile]
    bytes_fetched: int = 0
    download_seconds: float = 0.0
    replans: int = 0
    gate: dict[str, bool] = field(default_factory=dict)
    #: Who staged it (a run id): the key `publish` must be given to publish it.
    key: str = LOCAL_KEY
    #: The mirror generation the plan was made against (None: no mirror yet). Publishing on
    #: top of any other generation would mix two runs' views of the mirror, so it is refused.
    base_generation: str | None = None
    #: Files unchanged upstream whose published copy drifted from the manifest: fetched again.
    repaired: list[str] = field(default_factory=list)

    @property
    def fetched(self) -> list[StagedFile]:
        return [f for f in self.files if f.status == "fetched"]

    @property
    def failed(self) -> list[StagedFile]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def total_rows(self) -> int:
        return sum(f.rows or 0 for f in self.files)

    @property
    def download_mb_per_s(self) -> float:
        return (
            self.bytes_fetched / 1e6 / self.download_seconds if self.download_seconds > 0 else 0.0
        )

    @property
    def version(self) -> str:
        """Content identity of the candidate: the files' sha256s and the card's count."""
        return content_version([(f.name, f.sha256) for f in self.files], self.expected_rows)

    def remote(self) -> RemoteConfig:
        """The upstream state this candidate was staged from (what publishing records)."""
        files = tuple(RemoteFile(f.path, f.size, f.sha256) for f in self.files)
        return RemoteConfig(self.repo_id, self.config, self.commit, files, self.expected_rows)

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate) and all(self.gate.values())

    def files_markdown(self, limit: int = 200) -> str:
        """Per-file state for the UI: changed and failed files first."""
        order = {"failed": 0, "fetched": 1, "current": 2}
        rows = sorted(self.files, key=lambda f: (order[f.status], f.name))
        lines = ["| file | state | rows | MB | sha256 | reason |", "|---|---|---|---|---|---|"]
        for f in rows[:limit]:
            state = "changed" if f.status == "fetched" and f.name in self.changed else f.status
            state = "added" if f.status == "fetched" and f.name in self.added else state
            state = "drifted" if f.status == "fetched" and f.name in self.repaired else state
            reason = (f.reason or "").replace("|", "\\|").replace("\n", " ")
            rows_text = "" if f.rows is None else f"{f.rows:,}"
            lines.append(
                f"| {f.name} | {state} | {rows_text} | {f.size / 1e6:,.1f} | {f.sha256[:12]} | {reason} |"
            )
        for name in self.removed:
            lines.append(f"| {name} | removed upstream | | | | |")
        if len(rows) > limit:
            lines.append(f"| … {len(rows) - limit} more | | | | | |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> StagedState:
        document = json.loads(text)
        document["files"] = [StagedFile(**f) for f in document["files"]]
        return cls(**document)


def content_version(files: list[tuple[str, str]], expected_rows: int | None) -> str:
    digest = hashlib.sha256()
    for name, sha256 in sorted(files):
        digest.update(f"{name}\0{sha256}\n".encode())
    digest.update(f"rows={expected_rows}".encode())
    return digest.hexdigest()[:16]


def remote_version(remote: RemoteConfig) -> str:
    """Changes when this config's files or card count change, not when other paths do."""
    return content_version([(f.name, f.sha256) for f in remote.files], remote.expected_rows)


# --- on disk ------------------------------------------------------------------------------------


def _remote_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "remote.json"


def _staged_dir(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "staged"


def _staged_path(layout: Layout, config: str, key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise ValueError(f"staged state key {key!r} is not a run id (letters, digits, - and _)")
    return _staged_dir(layout, config) / f"{key}.json"


def save_remote(layout: Layout, remote: RemoteConfig) -> None:
    document = {**asdict(remote), "files": [asdict(f) for f in remote.files]}
    write_atomic(_remote_path(layout, remote.config), json.dumps(document, indent=1).encode())


def load_remote(layout: Layout, config: str) -> RemoteConfig | None:
    return read_rebuildable(_remote_path(layout, config), _parse_remote)


def _parse_remote(text: str) -> RemoteConfig:
    document = json.loads(text)
    document["files"] = tuple(RemoteFile(**f) for f in document["files"])
    return RemoteConfig(**document)


def refresh_remote(layout: Layout, client: HubClient, config: str) -> RemoteConfig:
    """Read upstream's state of `config` and keep it for the steps that follow."""
    remote = client.remote_config(config)
    save_remote(layout, remote)
    return remote


def load_staged(layout: Layout, config: str, key: str | None = None) -> StagedState | None:
    """The state staged under `key` (a run id), or with no key the newest one, for inspection
    only: publishing always names its key. A damaged one under `key` raises LocalStorageError
    (nothing is published from it; the next sync stages anew); the newest, damaged, is none."""
    if key is not None:
        path = _staged_path(layout, config, key)
        state = read_rebuildable(path, StagedState.from_json)
        if state is None and path.exists():
            raise LocalStorageError(
                f"the state staged by run {key} ({path}) is damaged: run `tol-dagster sync` "
                "again, which stages anew; the mirror keeps its last validated generation"
            )
        return state
    newest = _staged_files(layout, config)
    return read_rebuildable(newest[0], StagedState.from_json) if newest else None


def _staged_files(layout: Layout, config: str) -> list[Path]:
    """Staged states of `config`, newest first."""
    folder = _staged_dir(layout, config)
    files = [p for p in folder.glob("*.json") if p.is_file()] if folder.is_dir() else []
    return sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def save_staged(layout: Layout, state: StagedState) -> None:
    write_atomic(_staged_path(layout, state.config, state.key), state.to_json().encode())
    for old in _staged_files(layout, state.config)[KEEP_STAGED:]:
        old.unlink(missing_ok=True)


def config_lock(layout: Layout, config: str) -> contextlib.AbstractContextManager[None]:
    """One writer per config's store at a time. The kernel drops the lock if the process dies."""
    return file_lock(layout.store_dir(config) / ".lock")


# --- where the candidate's files are ------------------------------------------------------------


def pin_current(
    layout: Layout, state: StagedState
) -> contextlib.AbstractContextManager[PinnedGeneration | None]:
    """The published generation that the candidate's unchanged files come from, leased."""
    if all(f.status != "current" for f in state.files):
        return contextlib.nullcontext(None)
    return pin_generation(layout, state.config)


def candidate_path(
    layout: Layout, state: StagedState, f: StagedFile, pinned: PinnedGeneration | None
) -> Path:
    """Where the candidate's file is: staging if fetched, else the pinned generation, whose
    bytes must be the ones staged as current."""
    if f.status == "fetched":
        return stage_path(layout, state.config, state.commit, f.name)
    if pinned is None or pinned.files.get(f.name) != f.sha256:
        where = "no published generation" if pinned is None else f"generation {pinned.name}"
        raise StoreError(
            f"{state.config}: {f.name} was staged as unchanged (sha256 {f.sha256[:12]}) but "
            f"{where} does not hold those bytes: the mirror changed since this sync staged "
            "its files. Run `tol-dagster sync` again"
        )
    return pinned.path / f.name

"""Where everything lives under the data home (`TOL_HOME`). The only place that knows paths.

<home>/mirror/<config>            symlink to the published generation: upstream's *.parquet only
<home>/published/<config>/        slices/, catalog.parquet, summary/, taxon_index.parquet, ...
<home>/store/<config>/            the mirror's private state:
    manifest.json                 the durable manifest of the published generation
    generations/<id>/             hard-linked generations (the symlink points at one)
    generation_records/<id>.json  what generation <id> holds: file -> sha256, commit, when published
    leases/<id>.lock              shared flocks of runs reading generation <id> (see pins.py)
    staging/<commit>/             files fetched and verified for a commit not yet published
    partial/<sha256>.part         stable partial downloads, resumed across processes
    quarantine/                   files that failed a check, with a .reason.txt each
    derived/<sha256>/             per-file results (validation facts, summaries) keyed by content
<home>/dagster/                   DAGSTER_HOME: runs, event logs, schedules
<home>/steps/<run id>/            what a run's steps pass each other (names, sha256s: no data)
<home>/demo-hub/                  the sample repo the local Hub serves in `make demo`/`make dev`

Commit ids and file names that become path components are checked here (`check_commit`,
`check_file_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_COMMIT = re.compile(r"^[0-9A-Za-z]+$")


@dataclass(frozen=True)
class Layout:
    """Paths under one data home. `home` is always absolute."""

    home: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())

    # --- the public contract -------------------------------------------------------------
    def mirror_dir(self, config: str) -> Path:
        return self.home / "mirror" / config

    def published_dir(self, config: str) -> Path:
        return self.home / "published" / config

    def slices_dir(self, config: str) -> Path:
        return self.published_dir(config) / "slices"

    def catalog_path(self, config: str) -> Path:
        return self.published_dir(config) / "catalog.parquet"

    def summary_dir(self, config: str) -> Path:
        return self.published_dir(config) / "summary"

    def taxon_index_path(self, config: str) -> Path:
        return self.published_dir(config) / "taxon_index.parquet"

    def centroids_path(self, config: str) -> Path:
        return self.published_dir(config) / "centroids.parquet"

    # --- private state ---------------------------------------------------------------------
    def store_dir(self, config: str) -> Path:
        return self.home / "store" / config

    def manifest_path(self, config: str) -> Path:
        return self.store_dir(config) / "manifest.json"

    def generations_dir(self, config: str) -> Path:
        return self.store_dir(config) / "generations"

    def generation_record_path(self, config: str, generation: str) -> Path:
        """Outside the generation's folder: the mirror shows upstream's files only."""
        return self.store_dir(config) / "generation_records" / f"{generation}.json"

    def lease_path(self, config: str, generation: str) -> Path:
        return self.store_dir(config) / "leases" / f"{generation}.lock"

    def staging_dir(self, config: str, commit: str) -> Path:
        return self.store_dir(config) / "staging" / commit

    def partial_dir(self, config: str) -> Path:
        return self.store_dir(config) / "partial"

    def quarantine_dir(self, config: str) -> Path:
        return self.store_dir(config) / "quarantine"

    def derived_dir(self, config: str, sha256: str) -> Path:
        return self.store_dir(config) / "derived" / sha256

    def state_dir(self, config: str) -> Path:
        """Small JSON state shared between assets, sensors and the command line."""
        return self.store_dir(config) / "state"

    def slice_records_dir(self, config: str) -> Path:
        """Where the records of `config`'s slices are."""
        return self.state_dir(config) / "slices"

    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def step_outputs_dir(self) -> Path:
        """What a run's steps pass each other, where every worker finds it: under the data
        home, which workers share (`DAGSTER_HOME` need not be)."""
        return self.home / "steps"

    def demo_repo(self) -> Path:
        """The generated sample repo that the local Hub serves in the demo and `make dev`."""
        return self.home / "demo-hub"


def check_commit(commit: str) -> str:
    """`commit`, if it is a plain alphanumeric revision id (it names a staging folder)."""
    if not _COMMIT.match(commit):
        raise ValueError(f"commit {commit!r} is not a plain alphanumeric revision id")
    return commit


def check_file_name(name: str) -> str:
    """A published file name: plain, visible, and a parquet file (the mirror holds nothing else)."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or not name.endswith(".parquet")
    ):
        raise ValueError(
            f"{name!r} is not a plain *.parquet file name; the mirror holds only those"
        )
    return name

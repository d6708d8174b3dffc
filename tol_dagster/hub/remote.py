"""What the Hub announces about a config at one commit, as small typed values.

These are the wire objects the rest of the mirror plans with: the manifest diffs them, a sync
downloads them. They carry only values already checked where they entered (`hub.untrusted`), and
this module imports nothing heavy, so reading a manifest need not load huggingface_hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class RemoteFile:
    """One upstream parquet file as the Hub announces it at a commit."""

    path: str
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class RemoteConfig:
    """A config's folder upstream at one commit: its parquet files and the card's row count."""

    repo_id: str
    config: str
    commit: str
    files: tuple[RemoteFile, ...]
    expected_rows: int | None

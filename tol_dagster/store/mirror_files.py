"""The published mirror of one config as the derived outputs see it: files in the global order.

Upstream's file names (`train-00000-of-00666.parquet`, ...) sort in the dataset's global sort
order, and a file's sha256 names its content, so per-file results can be cached by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class MirrorFile:
    """One parquet file of the mirror: its file name, content hash and local path."""

    name: str
    sha256: str
    path: Path


def mirror_files(directory: Path, sha256s: Mapping[str, str]) -> list[MirrorFile]:
    """The files named by `sha256s` (file name or repo path -> sha256) under `directory`, sorted.

    Raises FileNotFoundError naming the first file the manifest lists but the folder lacks.
    """
    files = []
    for key, sha256 in sha256s.items():
        name = PurePosixPath(key).name
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: listed in the manifest but missing from the mirror; "
                "run `tol-dagster sync` to restore it"
            )
        files.append(MirrorFile(name, sha256, path))
    return sorted(files, key=lambda file: file.name)

"""The published mirror of one config as the derived outputs see it: files in the global order.

Upstream's file names (`train-00000-of-00666.parquet`, ...) sort in the dataset's global sort
order, and a file's sha256 names its content, so per-file results can be cached by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tol_dagster.errors import StoreError
from tol_dagster.store.hashing import sha256_file


@dataclass(frozen=True)
class MirrorFile:
    """One parquet file of the mirror: its file name, content hash and local path."""

    name: str
    sha256: str
    path: Path


def changed_on_disk(file: MirrorFile, sha256: str) -> StoreError:
    """The error for mirror file `file` found to hash to `sha256`, not the one it was verified
    with: it changed on disk since."""
    return StoreError(
        f"mirror file {file.path} no longer has the sha256 it was verified with "
        f"({file.sha256[:12]}..., now {sha256[:12]}...): it changed on disk. Run the "
        "mirror's audit (the `mirror_matches_manifest` check, in the UI) so that it names "
        "the file, then `tol-dagster sync` fetches it again."
    )


def verify_unchanged(file: MirrorFile) -> None:
    """`changed_on_disk` unless `file` still hashes to its sha256: what is computed from it
    and kept by its sha256 must be of the bytes the gate verified."""
    sha256 = sha256_file(file.path)
    if sha256 != file.sha256.lower():
        raise changed_on_disk(file, sha256)


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

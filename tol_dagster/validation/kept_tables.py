"""The gate's kept tables of a mirror file (`emb_digests`, `chunk_crcs`) checked against the file
itself, for a check that trusted them and failed.

A byte flipped in a kept table still loads: a slice check that looks its rows up in it then
fails every slice whose rows the table covers, for as long as the file stays in the mirror,
blaming slices that are right. Recomputing the tables costs a read of the file (its sha256
and its `emb` decoded), too much for every check, fine for one that is about to fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tol_dagster.store.hashing import file_version
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs, emb_digests

#: The kept tables found sound (or made so) in this process, by their files' versions: a rank
#: pass whose slices all fail (a writer's fault) recomputes each mirror file's tables once.
_SOUND: set[tuple[object, ...]] = set()


def mend(file: MirrorFile, layout: Layout, config: str) -> list[Path]:
    """Recompute `file`'s chunk crcs and digest table from its bytes (which must still hash to
    its sha256: StoreError otherwise) and replace each kept one that differs; those replaced."""
    paths = (
        chunk_crcs.crcs_path(layout, config, file),
        emb_digests.digests_path(layout, config, file),
    )
    if _versions(file, paths) in _SOUND:
        return []
    crcs = chunk_crcs.compute(file)  # its sha256 verified in the same read
    digests = emb_digests.compute_table(file.path)
    mended = []
    for path, fresh, save in zip(
        paths, (crcs, digests), (chunk_crcs.save, emb_digests.save_table), strict=True
    ):
        if not _holds(path, fresh):
            save(path, fresh)
            mended.append(path)
    _SOUND.add(_versions(file, paths))
    return mended


def _versions(file: MirrorFile, paths: tuple[Path, ...]) -> tuple[object, ...]:
    """`file`'s sha256 and the versions of the tables kept at `paths` (`hashing.file_version`)."""
    versions: list[object] = [file.sha256]
    for path in paths:
        try:
            versions.append(file_version(path.stat()))
        except FileNotFoundError:
            versions.append(None)
    return tuple(versions)


def _holds(path: Path, fresh: np.ndarray) -> bool:
    """Whether the table kept at `path` is `fresh`; False if it does not load."""
    try:
        return bool(np.array_equal(np.load(path, mmap_mode="r"), fresh))
    except (OSError, ValueError, EOFError):
        return False

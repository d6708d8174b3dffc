"""The sha256 of a file: the one place that hashes content (downloads, audit, staging)."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Large reads keep hashing at disk speed without holding a whole ~500 MB file in memory.
CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes, read in 8 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(view):
            digest.update(view[:read])
    return digest.hexdigest()

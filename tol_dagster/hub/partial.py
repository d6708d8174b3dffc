"""The partial file of one download: stable, resumable, and hashed as it grows.

A download writes to `<partial_dir>/<sha256>.part`, named by the sha256 it must end with, so
the next attempt or process finds it and resumes with a Range request (huggingface_hub leaves an
orphan `.incomplete` behind and starts again from byte 0). A partial from an earlier process is
hashed once when opened; from then on each written chunk is hashed as it arrives, so the file is
read at most once, and publishing it is one atomic rename.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Any, BinaryIO

from tol_dagster.hub.remote import RemoteFile

#: Reads of the partial when its hash must be rebuilt.
CHUNK_BYTES = 8 * 1024 * 1024


class PartialFile:
    """The stable partial file of one download, hashed as it grows so it is read at most once.

    Hashing runs on a thread of its own (hashlib releases the GIL), so it overlaps the network
    and the disk instead of adding to them. Not `store.hashing.sha256_file`: a resume needs the
    running hash state, not a final digest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._out: BinaryIO | None = None
        self._pending: queue.Queue[bytes | None] | None = None
        self._hasher: threading.Thread | None = None
        path.touch(exist_ok=True)
        self.rehash()

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sha256(self) -> str:
        self._drain()
        return self._hash.hexdigest()

    def matches(self, file: RemoteFile) -> bool:
        return self.size == file.size and self.sha256 == file.sha256

    def rehash(self) -> None:
        """Hash what is on disk now (a partial from an earlier process, or Xet's output)."""
        self.close()
        self._hash, self.size = hashlib.sha256(), 0
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                self._hash.update(chunk)
                self.size += len(chunk)

    def write(self, chunk: bytes) -> None:
        if self._out is None:
            self._out = self.path.open("ab")
        if self._pending is None:
            self._pending = queue.Queue(maxsize=64)
            self._hasher = threading.Thread(
                target=_hash_chunks,
                args=(self._pending, self._hash),
                name="tol-sha256",
                daemon=True,
            )
            self._hasher.start()
        self._out.write(chunk)
        self._pending.put(chunk)
        self.size += len(chunk)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        self._drain()
        if self._out is not None:
            self._out.close()
            self._out = None

    def reset(self) -> None:
        self.close()
        self.path.write_bytes(b"")
        self._hash, self.size = hashlib.sha256(), 0

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def publish(self, dest: Path) -> None:
        """Atomic: `dest` is either absent or whole. Durability is the publisher's job (the
        mirror fsyncs each file before linking it into a generation), so no fsync here."""
        self.close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, dest)

    def _drain(self) -> None:
        """Wait until every written byte is hashed; stop the hashing thread."""
        if self._pending is not None and self._hasher is not None:
            self._pending.put(None)
            self._hasher.join()
            self._pending = self._hasher = None


def _hash_chunks(pending: queue.Queue[bytes | None], digest: Any) -> None:
    while (chunk := pending.get()) is not None:
        digest.update(chunk)

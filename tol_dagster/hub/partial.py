"""The partial file of one download: stable, resumable, and hashed as it grows.

A download writes to `<partial_dir>/<sha256>.part`, named by the sha256 it must end with, so
the next attempt or process finds it and resumes with a Range request (huggingface_hub leaves an
orphan `.incomplete` behind and starts again from byte 0). A partial from an earlier process is
hashed once when opened; from then on the bytes written are hashed as they arrive, so the file
is read at most once, and publishing it is one atomic rename.

httpx2 hands a body over in chunks of up to 64 KiB; they are held until a mebibyte is, then
written and handed to the hashing thread together: a hand-over per chunk (a queue's put and get,
the threads' wake-ups) was a sixth of a download's CPU.
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
#: Bytes received held before they are written and hashed together.
HAND_OVER_BYTES = 1024 * 1024


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
        self._pending: queue.Queue[list[bytes] | None] | None = None
        self._hasher: threading.Thread | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        path.touch(exist_ok=True)
        self.rehash()

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sha256(self) -> str:
        self._hand_over()
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
        """Append `chunk`: counted in `size` now, written and hashed with the chunks after it
        once HAND_OVER_BYTES are held (or at `flush`, `close`, `sha256`)."""
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        self.size += len(chunk)
        if self._held_bytes >= HAND_OVER_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        """Write the held chunks and queue them for the hashing thread."""
        if not self._held:
            return
        held, self._held, self._held_bytes = self._held, [], 0
        if self._out is None:
            self._out = self.path.open("ab")
        if self._pending is None:
            self._pending = queue.Queue(maxsize=4)  # 4 MiB unhashed at most, as before
            self._hasher = threading.Thread(
                target=_hash_chunks,
                args=(self._pending, self._hash),
                name="tol-sha256",
                daemon=True,
            )
            self._hasher.start()
        self._out.writelines(held)
        self._pending.put(held)

    def flush(self) -> None:
        self._hand_over()
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        self._hand_over()
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


def _hash_chunks(pending: queue.Queue[list[bytes] | None], digest: Any) -> None:
    while (chunks := pending.get()) is not None:
        for chunk in chunks:
            digest.update(chunk)

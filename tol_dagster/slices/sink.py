"""Where a slice's bytes go: a file that hashes them on their way out, and appends the byte
ranges of copied row groups without them passing through Python.

The sha256 is computed as the bytes are written, so the slice is never read a second time to
hash it. A copied row group is hashed from a memory map of the page cache and copied by the
kernel (`os.copy_file_range`), or through userspace where the kernel cannot (another file
system, an old kernel, macOS, Windows).
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tol_dagster.errors import StoreError
from tol_dagster.store.hashing import HashingWriter

#: errno values of `copy_file_range` meaning "not here" (another file system, an old kernel,
#: a file system without it): the bytes are then copied through userspace.
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
)
#: Bytes per read when a copied row group goes through userspace.
_COPY_BLOCK = 8 << 20


def kernel_copy(source: Any, target: Any, start: int, length: int) -> int:
    """Bytes [start, start + length) of `source` appended to `target` by the kernel
    (`os.copy_file_range`, Linux only: absent on macOS and Windows); returns how many it
    copied, 0 where it is missing or refuses this pair of files. Other errors (disk full, I/O)
    are raised."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is None:
        return 0
    copied = 0
    try:
        while copied < length:
            step = copy_file_range(
                source.fileno(), target.fileno(), length - copied, start + copied
            )
            if step == 0:
                break
            copied += step
    except OSError as error:
        if error.errno not in _NO_KERNEL_COPY:
            raise
    return copied


@dataclass
class HashingSink(HashingWriter):
    """A write-only file that hashes the bytes on their way out (no second read of the slice),
    and appends copied row groups without them passing through Python."""

    closed: bool = False

    def copy_range(self, path: Path, start: int, length: int) -> None:
        """Append bytes [start, start + length) of `path` without passing them through Python:
        hashed from a memory map of the page cache, copied by the kernel."""
        with open(path, "rb") as source:
            skip = start % mmap.ALLOCATIONGRANULARITY
            with (
                mmap.mmap(
                    source.fileno(), skip + length, offset=start - skip, access=mmap.ACCESS_READ
                ) as mapped,
                memoryview(mapped) as view,
                view[skip:] as part,
            ):
                self.digest.update(part)
            self.handle.flush()
            copied = kernel_copy(source, self.handle, start, length)
            source.seek(start + copied)
            while copied < length:
                block = source.read(min(_COPY_BLOCK, length - copied))
                if not block:
                    raise StoreError(f"{path}: ends inside a row group being copied")
                self.handle.write(block)
                copied += len(block)
        self.size += length

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True  # the caller closes the real file; `atomic_path` fsyncs it

"""Per-file results cached by content: what is computed from one mirror file lives under
`Layout.derived_dir(config, sha256)`, so an unchanged file is never recomputed and a changed one
(new sha256) is computed once, whatever its name.

A kept result that no longer reads (a disk's fault, a hand edit) is removed where it is read and
the command stops with `LocalStorageError` (exit 4) naming it: a missing result is computed
again from its mirror file, so the same command run again succeeds. Healthy reads pay nothing
for this. Results whose values are summed into published tables are kept with a crc32 of
their bytes (`keep_table`, `kept_table`): a flipped byte in one still parses, and would
otherwise be published as a count or a centroid that nobody computed.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from tol_dagster.errors import LocalStorageError
from tol_dagster.store.durable import atomic_path, fsync_dir
from tol_dagster.store.hashing import crc32
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.removal import children, remove_tree

T = TypeVar("T")

#: What ends a checked result: the crc32 of the bytes before it (little-endian), then a mark
#: that tells a checked result from a file written another way.
_MARK = b"tol.crc32"
_TRAILER = struct.Struct(f"<I{len(_MARK)}s")
#: A kept result's name: `<stem>.v<version>.<extension>`, the version bumped when its meaning
#: or its container changes.
_VERSIONED = re.compile(r"(?P<stem>.+)\.v(?P<version>\d+)(?P<ext>\.[^.]+)")


def derived_path(layout: Layout, config: str, file: MirrorFile, name: str) -> Path:
    """Where the per-file result `name` of `file` is kept."""
    return layout.derived_dir(config, file.sha256) / name


def derived_paths(layout: Layout, config: str, files: Sequence[MirrorFile], name: str) -> list[str]:
    """`derived_path` of each of `files`, as strings joined onto one folder: a `Path` per file
    costs ~15 us, which an update pays for every file of the mirror (10 ms at 666 files)."""
    root = str(layout.derived_dir(config, "-").parent)
    return [os.path.join(root, file.sha256, name) for file in files]


def read_kept(path: Path, read: Callable[[Path], T]) -> T:
    """`read` of the result kept at `path`; when it does not read as what it should (numpy's
    and Arrow's ValueError, EOFError), the result is removed and LocalStorageError says so."""
    try:
        return read(path)
    except (ValueError, EOFError) as error:
        with contextlib.suppress(OSError):
            path.unlink()
        raise LocalStorageError(
            f"the result kept at {path} was damaged ({error}) and is removed: run the same "
            "command again, and it is computed anew from its mirror file"
        ) from error


def keep_table(path: Path, table: pa.Table) -> None:
    """Keep `table` at `path` (atomically) as an Arrow IPC file followed by its crc32; the
    same rows give the same bytes, however they were computed: what is built from a kept
    table is keyed by that crc32 (`derived.parts.content_key`)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(_compacted(table))
    data = sink.getvalue()
    with atomic_path(path) as tmp, tmp.open("wb") as out:
        out.write(data)
        out.write(_TRAILER.pack(crc32(data), _MARK))


def _compacted(table: pa.Table) -> pa.Table:
    """`table` with each column one array of buffers of its own: a slice of a larger result
    (one file's rows of a scan of several) keeps buffers sized for its parent, and IPC writes
    it in other bytes than the same rows computed alone."""
    columns = [pa.concat_arrays(c.chunks) if c.num_chunks else c for c in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def forget_content(layout: Layout, config: str, sha256: str) -> bool:
    """Remove every result kept for the content `sha256` (whether there was any). A resync
    calls it for a file it fetches again because its copy drifted: parts computed from the
    drifted bytes are kept under the same sha256, and would outlive the repair. The folder is
    renamed away first, durably: a process killed while removing it leaves no part behind,
    only a folder no content is named after, which `store.cleanup.prune_derived` removes."""
    folder = layout.derived_dir(config, sha256)
    forgotten = folder.with_name(f"{folder.name}.forgotten")
    remove_tree(forgotten)  # left by a removal killed midway
    try:
        folder.rename(forgotten)
    except FileNotFoundError:
        return False
    fsync_dir(folder.parent)
    remove_tree(forgotten)
    return True


def kept_crc32(path: Path | str) -> int | None:
    """The crc32 `keep_table` wrote after the result at `path` (its last bytes only, not
    checked against them): what a table built from it is keyed by. None when there is no
    such result."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:  # one read of the trailer, no buffered file object
            crc, mark = _TRAILER.unpack(
                os.pread(fd, _TRAILER.size, os.fstat(fd).st_size - _TRAILER.size)
            )
        finally:
            os.close(fd)
    except (OSError, struct.error):  # missing, shorter than a trailer
        return None
    return crc if mark == _MARK else None


def drop_older_versions(path: Path) -> None:
    """Remove the versions of the result kept at `path` older than its own (`name.v1.arrow`
    beside `name.v2.arrow`): no code reads them any more, and an old version of every file's
    centroid sums is gigabytes at full scale."""
    own = _VERSIONED.fullmatch(path.name)
    if own is None:
        return
    for sibling in children(path.parent):
        other = _VERSIONED.fullmatch(sibling.name)
        if (
            other is not None
            and (other["stem"], other["ext"]) == (own["stem"], own["ext"])
            and int(other["version"]) < int(own["version"])
        ):
            remove_tree(sibling)


def kept_table(path: Path) -> pa.Table:
    """The table `keep_table` kept at `path`, memory-mapped; ValueError when its bytes are not
    the ones kept (for `read_kept`). The crc32 (ISA-L's: 12-29 GB/s on our machines) costs
    less than the page faults of mapping them, which the read pays anyway."""
    return pa.ipc.open_file(_checked_bytes(path)).read_all()


def _checked_bytes(path: Path) -> pa.Buffer:
    with pa.memory_map(str(path)) as source:
        whole = source.read_buffer()
    if whole.size < _TRAILER.size:
        raise ValueError(f"{whole.size} bytes: too short to be a checked result")
    data = whole.slice(0, whole.size - _TRAILER.size)
    kept, mark = _TRAILER.unpack(whole.slice(data.size).to_pybytes())
    if mark != _MARK:
        raise ValueError("no crc32 follows its bytes")
    if (actual := crc32(data)) != kept:
        raise ValueError(f"its bytes have the crc32 {actual:08x}, not {kept:08x} as written")
    return data

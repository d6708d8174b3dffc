"""A download's partial file: chunks held and handed to the disk and the hash a mebibyte at a
time, none lost at a cut or a close (`hub.partial`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tol_dagster.hub.partial import HAND_OVER_BYTES, PartialFile

CHUNK = 64 * 1024  # what the network hands over


def _chunks(count: int) -> list[bytes]:
    return [os.urandom(CHUNK) for _ in range(count)]


def test_chunks_reach_the_disk_and_the_hash_a_mebibyte_at_a_time(tmp_path: Path) -> None:
    chunks = _chunks(40)  # 2.5 MiB
    path = tmp_path / "file.part"
    with PartialFile(path) as partial:
        for chunk in chunks:
            partial.write(chunk)
        assert partial.size == 40 * CHUNK, "held bytes count: a resume asks for the bytes after"
        assert path.stat().st_size == 2 * HAND_OVER_BYTES, "two hand-overs, the rest held"
        partial.flush()
        assert path.stat().st_size == 40 * CHUNK
        assert partial.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert path.read_bytes() == b"".join(chunks)


def test_bytes_held_at_a_close_are_written_and_a_reopened_partial_resumes_after_them(
    tmp_path: Path,
) -> None:
    first, then = _chunks(3), _chunks(2)  # under a mebibyte: all held
    path = tmp_path / "file.part"
    with PartialFile(path) as partial:
        for chunk in first:
            partial.write(chunk)
    with PartialFile(path) as partial:
        assert partial.size == 3 * CHUNK
        for chunk in then:
            partial.write(chunk)
        assert partial.sha256 == hashlib.sha256(b"".join(first + then)).hexdigest()
    assert path.read_bytes() == b"".join(first + then)


def test_a_reset_drops_the_held_bytes_with_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "file.part"
    with PartialFile(path) as partial:
        partial.write(b"stale")
        partial.reset()
        partial.write(b"fresh")
        assert (partial.size, partial.sha256) == (5, hashlib.sha256(b"fresh").hexdigest())
    assert path.read_bytes() == b"fresh"

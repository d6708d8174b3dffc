"""Deferred renames: a file is put in place only after its fsync, in order, and a failure stops
the queue, removes what it holds and is raised to the caller."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from tol_dagster.store import renames
from tol_dagster.store.durable import atomic_path
from tol_dagster.store.renames import DeferredRenames


def _temp(folder: Path, text: str) -> Path:
    path = folder / f".{text}.tmp"
    path.write_text(text)
    return path


def test_files_are_renamed_in_order_after_their_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    seen: list[tuple[str, str | None]] = []

    def fsync(path: Path) -> None:  # what a reader of the target sees while the bytes sync
        seen.append((path.read_text(), target.read_text() if target.exists() else None))

    monkeypatch.setattr(renames, "fsync_file", fsync)
    with DeferredRenames() as queue:
        queue.publish(_temp(tmp_path, "first"), target)
        queue.publish(_temp(tmp_path, "second"), target)
        queue.wait()
        assert target.read_text() == "second"
    assert seen == [("first", None), ("second", "first")]  # never renamed before its fsync
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_failed_fsync_publishes_nothing_more_and_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = threading.Event()

    def full(path: Path) -> None:
        queued.wait(10)  # all three are queued before the first is synced
        if path.name.startswith(".b"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(renames, "fsync_file", full)
    queue = DeferredRenames()
    queue.publish(_temp(tmp_path, "a"), tmp_path / "a.txt")
    queue.publish(_temp(tmp_path, "b"), tmp_path / "b.txt")
    queue.publish(_temp(tmp_path, "c"), tmp_path / "c.txt")
    queued.set()
    with pytest.raises(OSError, match="No space left"):
        queue.wait()
    with pytest.raises(OSError, match="No space left"):
        queue.publish(_temp(tmp_path, "d"), tmp_path / "d.txt")
    with pytest.raises(OSError, match="No space left"):
        queue.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.tmp", "a.txt"]  # d: never queued


def test_bytes_are_written_in_turn_and_not_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record queued after its slice is written only once the slice is in place, and never
    once a file before it failed."""
    slice_path, record = tmp_path / "s.parquet", tmp_path / "records" / "s.json"
    seen: list[bool] = []

    def fsync(path: Path) -> None:
        seen.append(record.exists())
        if path.name.startswith(".bad"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(renames, "fsync_file", fsync)
    with DeferredRenames() as queue:
        queue.publish(_temp(tmp_path, "good"), slice_path)
        queue.write(b"{}", record)
        queue.wait()
    assert seen == [False] and record.read_bytes() == b"{}"
    assert sorted(p.name for p in record.parent.iterdir()) == ["s.json"]

    queue = DeferredRenames()
    queue.publish(_temp(tmp_path, "bad"), tmp_path / "t.parquet")
    queue.write(b"{}", tmp_path / "records" / "t.json")
    with pytest.raises(OSError, match="No space left"):
        queue.close()
    assert not (tmp_path / "records" / "t.json").exists()
    assert sorted(p.name for p in record.parent.iterdir()) == ["s.json"]


def test_atomic_path_hands_the_finished_file_over_and_keeps_a_failed_one_out(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with DeferredRenames() as queue:
        with (
            pytest.raises(RuntimeError),
            atomic_path(target, sync_dir=False, publish=queue.publish) as temp,
        ):
            temp.write_text("half")
            raise RuntimeError("the writer failed")
        queue.wait()
        assert target.read_text() == "old"
        with atomic_path(target, sync_dir=False, publish=queue.publish) as temp:
            temp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(ValueError, match="folder"), atomic_path(target, publish=queue.publish):
        pass

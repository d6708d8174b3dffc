"""A per-file result kept by content (uuid hashes, emb digests, chunk crcs) that no longer reads
is removed where it is read, with exit 4 naming it, never a bug (exit 70); the same command run
again computes it anew, from mirror bytes that still hash to what the gate verified, and
publishes what it published before. (The derived tables' parts are computed anew where they are
read: `tests/test_checked_parts.py`.)"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from resync_testing import CONFIG, User, dagster_home, manifest, synced, synced_home, user

from tol_dagster.errors import LocalStorageError, StoreError
from tol_dagster.store.file_cache import (
    derived_path,
    derived_paths,
    keep_table,
    kept_crc32,
    read_kept,
)
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.emb_digests import digests_path, ensure_table
from tol_dagster.validation.uuid_index import kept_array

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _read_ipc(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def test_a_damaged_kept_array_or_table_is_removed_and_named(tmp_path: Path) -> None:
    array, table = tmp_path / "digests.npy", tmp_path / "part.arrow"
    np.save(array, np.arange(1000, dtype=np.uint64))
    feather.write_feather(pa.table({"n": list(range(1000))}), table, compression="uncompressed")
    assert kept_array(array).sum() == sum(range(1000))
    assert read_kept(table, _read_ipc).num_rows == 1000

    for path, read in [(array, lambda p: np.load(p, mmap_mode="r")), (table, _read_ipc)]:
        _truncated(path)
        with pytest.raises(LocalStorageError, match=r"was damaged .* and is removed") as raised:
            read_kept(path, read)
        assert str(path) in str(raised.value) and raised.value.exit_code == 4
        assert not path.exists(), "removed: what reads it next computes it anew"


def test_the_same_command_again_heals_every_damaged_result_and_publishes_the_same(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    layout = synced.layout
    published = layout.slices_dir(CONFIG) / "family%3DFelidae.parquet"
    before = sha256_file(published)
    kept = sorted(p for p in layout.store_dir(CONFIG).glob("derived/*/*") if p.name != "facts.json")
    originals = {p: p.read_bytes() for p in kept if p.suffix == ".npy"}
    assert len(originals) == 9, "three arrays for each of the three files"
    for path in kept:
        _truncated(path)
    published.unlink()  # so that the one published at the end is built anew

    attempts = []
    for _ in range(len(kept) + 1):
        outcome = synced.tol("slice", "family=Felidae")
        attempts.append(outcome.code)
        if outcome.code == 0:
            break
        assert outcome.code == 4 and "was damaged" in outcome.err, outcome.text
    assert attempts[-1] == 0 and len(attempts) > 1, attempts
    assert sha256_file(published) == before, "the slice is the one published before the damage"
    for path, data in originals.items():
        now = path.read_bytes() if path.exists() else None
        assert now in (None, data, data[: len(data) // 2]), f"{path} computed anew differs"
    healed = [p for p, data in originals.items() if p.exists() and p.read_bytes() == data]
    assert healed, "the arrays the slice read were computed anew, as they were"


def test_emb_digests_are_computed_only_from_mirror_bytes_the_gate_verified(
    synced: User, tmp_path: Path
) -> None:
    layout = synced.layout
    entry = manifest(layout).entries[0]
    flipped = tmp_path / entry.name
    shutil.copyfile(layout.mirror_dir(CONFIG) / entry.name, flipped)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    file = MirrorFile(entry.name, entry.sha256, flipped)
    kept = digests_path(layout, CONFIG, file)
    kept.unlink()

    with pytest.raises(
        StoreError, match=re.escape(f"mirror file {flipped} no longer has the sha256")
    ):
        ensure_table(file, layout, CONFIG)
    assert not kept.exists(), "no digest kept from changed bytes"


def test_a_kept_crc32_is_read_from_its_trailer_and_none_without_one(tmp_path: Path) -> None:
    part = tmp_path / "part.v1.arrow"
    keep_table(part, pa.table({"n": [1, 2, 3]}))
    data = part.read_bytes()
    assert kept_crc32(part) == kept_crc32(str(part)) == zlib.crc32(data[:-13])
    (tmp_path / "short").write_bytes(data[-5:])  # shorter than a trailer
    (tmp_path / "unmarked").write_bytes(data[:-1] + b"?")  # another file's last bytes
    for path in ("missing", "short", "unmarked"):
        assert kept_crc32(tmp_path / path) is None, path


def test_derived_paths_are_each_files_derived_path(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    files = [MirrorFile(f"f{i}.parquet", f"{i:064x}", tmp_path / f"f{i}") for i in range(3)]
    paths = derived_paths(layout, CONFIG, files, "part.v1.arrow")
    assert paths == [str(derived_path(layout, CONFIG, f, "part.v1.arrow")) for f in files]

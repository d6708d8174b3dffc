"""uuid uniqueness across a config: incremental, bounded, and confirmed with the strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster import duck
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.uuid_index import (
    check_uuid_unique_across,
    hashes_path,
    save_hashes,
    uuid_hashes,
    uuid_row_hashes,
)

CONFIG = DEFAULT_CONFIG


@pytest.fixture
def mirror(small_sample: Path, tmp_path: Path) -> list[MirrorFile]:
    """An editable copy of the sample's files, as the gate sees them."""
    folder = tmp_path / "files"
    shutil.copytree(small_sample / CONFIG, folder)
    return [describe(path) for path in sorted(folder.glob("*.parquet"))]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "home")


def describe(path: Path) -> MirrorFile:
    return MirrorFile(path.name, sha256_file(path), path)


def set_uuid(file: MirrorFile, row: int, uuid: str) -> MirrorFile:
    """Rewrite `file` with `uuid` at `row`; returns the new content's MirrorFile."""
    table = pq.read_table(file.path)
    uuids = table.column("uuid").to_pylist()
    uuids[row] = uuid
    table = table.set_column(0, "uuid", pa.array(uuids, pa.string()))
    pq.write_table(table, file.path, row_group_size=500, compression="zstd")
    return describe(file.path)


def uuid_at(file: MirrorFile, row: int) -> str:
    return str(pq.read_table(file.path, columns=["uuid"]).column("uuid")[row].as_py())


def test_distinct_uuids_pass_and_every_hash_array_is_cached(
    mirror: list[MirrorFile], layout: Layout
) -> None:
    result = check_uuid_unique_across(
        {f.name for f in mirror}, mirror, layout=layout, config=CONFIG
    )
    assert result.passed, result.message
    assert result.details["computed"] == [f.name for f in mirror]
    for f in mirror:
        hashes = np.load(hashes_path(layout, CONFIG, f))
        assert hashes.size == pq.ParquetFile(f.path).metadata.num_rows
        assert np.all(hashes[1:] >= hashes[:-1])


def test_a_duplicate_across_files_names_the_uuid_and_both_files(
    mirror: list[MirrorFile], layout: Layout
) -> None:
    check_uuid_unique_across({f.name for f in mirror}, mirror, layout=layout, config=CONFIG)
    uuid = uuid_at(mirror[0], 17)
    mirror[2] = set_uuid(mirror[2], 400, uuid)
    result = check_uuid_unique_across({mirror[2].name}, mirror, layout=layout, config=CONFIG)
    assert not result.passed
    assert f"uuid {uuid!r} is in both" in result.message
    assert f"{mirror[0].name} (row 17)" in result.message
    assert f"{mirror[2].name} (row 400)" in result.message


def test_only_the_changed_file_is_hashed_again(mirror: list[MirrorFile], layout: Layout) -> None:
    check_uuid_unique_across({f.name for f in mirror}, mirror, layout=layout, config=CONFIG)
    unchanged = [hashes_path(layout, CONFIG, f) for f in mirror[:2]]
    stamps = [path.stat().st_mtime_ns for path in unchanged]

    mirror[2] = set_uuid(mirror[2], 5, "0" * 32)
    result = check_uuid_unique_across({mirror[2].name}, mirror, layout=layout, config=CONFIG)
    assert result.passed, result.message
    assert result.details["computed"] == [mirror[2].name]
    assert [path.stat().st_mtime_ns for path in unchanged] == stamps

    again = check_uuid_unique_across({mirror[2].name}, mirror, layout=layout, config=CONFIG)
    assert again.details["computed"] == []


def test_duplicates_between_two_changed_files_are_found(
    mirror: list[MirrorFile], layout: Layout
) -> None:
    uuid = uuid_at(mirror[0], 1999)
    mirror[1] = set_uuid(mirror[1], 0, uuid)
    changed = {mirror[0].name, mirror[1].name}
    result = check_uuid_unique_across(changed, mirror, layout=layout, config=CONFIG)
    assert not result.passed
    assert result.details["duplicates"][0] == {
        "uuid": uuid,
        "file_a": mirror[0].name,
        "row_a": 1999,
        "file_b": mirror[1].name,
        "row_b": 0,
    }


def test_hash_ranges_bound_memory_and_find_the_same_duplicates(
    mirror: list[MirrorFile], layout: Layout
) -> None:
    uuid = uuid_at(mirror[1], 321)
    mirror[0] = set_uuid(mirror[0], 1, uuid)
    mirror[2] = set_uuid(mirror[2], 2, uuid_at(mirror[1], 1234))
    changed = {mirror[0].name, mirror[2].name}
    result = check_uuid_unique_across(
        changed, mirror, layout=layout, config=CONFIG, max_group_hashes=500
    )
    assert result.details["hash_ranges"] > 1
    assert not result.passed
    pairs = {(d["file_a"], d["file_b"]) for d in result.details["duplicates"]}
    assert pairs == {(mirror[0].name, mirror[1].name), (mirror[1].name, mirror[2].name)}


def test_a_hash_collision_is_not_a_duplicate(mirror: list[MirrorFile], layout: Layout) -> None:
    """64-bit hashes collide at this scale: a shared hash with different uuids must pass."""
    check_uuid_unique_across({f.name for f in mirror}, mirror, layout=layout, config=CONFIG)
    theirs = np.load(hashes_path(layout, CONFIG, mirror[0]))
    mine_path = hashes_path(layout, CONFIG, mirror[1])
    forged = np.sort(np.concatenate([np.load(mine_path), theirs[:1]]))
    save_hashes(mine_path, forged)
    result = check_uuid_unique_across({mirror[1].name}, mirror, layout=layout, config=CONFIG)
    assert result.details["hash_hits"] >= 1
    assert result.passed, result.message


def test_unknown_changed_file_is_an_error(mirror: list[MirrorFile], layout: Layout) -> None:
    with pytest.raises(ValueError, match="not among"):
        check_uuid_unique_across({"nope.parquet"}, mirror, layout=layout, config=CONFIG)


def test_hashes_skip_nulls_and_are_sorted() -> None:
    hashes = uuid_hashes(pa.array(["b", None, "a", "b"]))
    assert hashes.dtype == np.uint64 and hashes.size == 3
    assert np.all(hashes[1:] >= hashes[:-1])
    assert np.count_nonzero(hashes[1:] == hashes[:-1]) == 1


def test_row_hashes_are_duckdbs_hash_in_row_order_across_chunks() -> None:
    """The cached hashes of earlier syncs stay valid: each row gets DuckDB's `hash(uuid)`, in
    row order, whatever the chunking, NULL rows included."""
    values = ["b", None, "a", "it's", "é—ü", "b", ""] * 300
    uuids = pa.chunked_array(
        [pa.array(values[:5]), pa.array(values[5:1000]), pa.array(values[1000:])]
    )
    with duck.cursor() as con:
        expected = [
            con.execute("SELECT hash(?::VARCHAR)", [value]).fetchone()[0] for value in values[:7]
        ]
    hashes = uuid_row_hashes(uuids)
    assert hashes.dtype == np.uint64 and hashes.size == len(values)
    assert hashes[:7].tolist() == expected
    assert (hashes.reshape(300, 7) == hashes[:7]).all()

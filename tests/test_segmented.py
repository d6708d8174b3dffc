"""A parquet file of keyed segments: a new version copies the unchanged segments' bytes from the
old one and encodes the rest; anything it cannot trust in the old one means a full write."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.parquet.segmented import (
    Segment,
    declared_segments,
    write_segmented,
)

SCHEMA = pa.schema([("name", pa.string()), ("n", pa.int64())])
OPTIONS = {"compression": "zstd"}


def rows(key: str, count: int, calls: list[str] | None = None) -> Segment:
    def build() -> pa.Table:
        if calls is not None:
            calls.append(key)
        return pa.table({"name": [f"{key}-{i}" for i in range(count)], "n": range(count)})

    return Segment(key, build)


def table_of(segments: list[Segment]) -> pa.Table:
    return pa.concat_tables([s.rows().cast(SCHEMA) for s in segments])


def test_a_new_version_copies_unchanged_segments_and_encodes_only_new_keys(
    tmp_path: Path,
) -> None:
    first = [rows("a", 3), rows("b", 0), rows("c", 1500), rows("d", 7)]
    old = tmp_path / "old.parquet"
    written = write_segmented(old, SCHEMA, first, layout="t.v1", **OPTIONS)
    assert (written.rows, written.copied, written.encoded) == (1510, 0, 4)

    calls: list[str] = []
    second = [rows("a", 3, calls), rows("c", 1500, calls), rows("e", 2, calls), rows("d", 7, calls)]
    new = tmp_path / "new.parquet"
    written = write_segmented(new, SCHEMA, second, layout="t.v1", previous=old, **OPTIONS)
    assert calls == ["e"]  # the others were never built: their bytes were copied
    assert (written.rows, written.copied, written.encoded) == (1512, 3, 1)
    assert pq.read_table(new).to_pylist() == table_of(second).to_pylist()
    before = {key: digest for key, _, digest in declared_segments(old) or []}
    after = {key: digest for key, _, digest in declared_segments(new) or []}
    assert {k: after[k] for k in ("a", "c", "d")} == {k: before[k] for k in ("a", "c", "d")}
    assert [(k, n) for k, n, _ in declared_segments(new) or []] == [
        ("a", 3),
        ("c", 1500),
        ("e", 2),
        ("d", 7),
    ]
    [(count, total)] = duckdb.sql(f"SELECT count(*), sum(n) FROM read_parquet('{new}')").fetchall()
    assert (count, total) == (1512, sum(range(3)) + sum(range(1500)) + 1 + sum(range(7)))


@pytest.mark.parametrize("why", ["another layout", "not ours", "missing", "row counts"])
def test_an_old_version_that_cannot_be_trusted_means_a_full_write(tmp_path: Path, why: str) -> None:
    segments = [rows("a", 3), rows("b", 4)]
    old = tmp_path / "old.parquet"
    if why == "not ours":
        pq.write_table(table_of(segments), old)
    elif why != "missing":
        write_segmented(old, SCHEMA, segments, layout="t.v1", **OPTIONS)
    if why == "row counts":  # it declares a row more than its row groups hold
        table = pq.read_table(old)
        pq.write_table(table.slice(1), old, **OPTIONS)  # the schema's metadata: the declaration
    layout = "t.v2" if why == "another layout" else "t.v1"
    calls: list[str] = []
    new = tmp_path / "new.parquet"
    written = write_segmented(
        new, SCHEMA, [rows("a", 3, calls), rows("b", 4, calls)], layout=layout, previous=old
    )
    assert calls == ["a", "b"] and written.copied == 0
    assert pq.read_table(new).num_rows == 7


def test_a_flipped_byte_in_the_old_version_is_not_carried_into_the_new(tmp_path: Path) -> None:
    segments = [rows("a", 2000), rows("b", 2000)]
    old = tmp_path / "old.parquet"
    write_segmented(old, SCHEMA, segments, layout="t.v1", compression="none")
    data = bytearray(old.read_bytes())
    at = data.index(b"a-1234")  # a value of segment a's pages, stored plain
    data[at] = ord("z")
    old.write_bytes(bytes(data))
    calls: list[str] = []
    new = tmp_path / "new.parquet"
    again = [rows("a", 2000, calls), rows("b", 2000, calls)]
    written = write_segmented(new, SCHEMA, again, layout="t.v1", previous=old, compression="none")
    assert calls == ["a", "b"] and written.copied == 0  # a's digest failed: all encoded
    assert pq.read_table(new)["name"].to_pylist() == table_of(segments)["name"].to_pylist()


def test_segment_keys_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        write_segmented(tmp_path / "x.parquet", SCHEMA, [rows("a", 1), rows("a", 2)], layout="t")


def test_no_segments_is_an_empty_table_with_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    assert write_segmented(path, SCHEMA, [], layout="t").rows == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)
    assert declared_segments(path) == []

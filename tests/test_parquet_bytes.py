"""Parquet at the byte level: footers round-trip byte for byte, spliced files read like the
row groups they were made of, and a row range read through the offset index equals pyarrow's."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.parquet_bytes import (
    SpliceError,
    Splicer,
    _write_struct,
    read_footer,
    read_rows,
)
from tol_dagster.schema import arrow_schema

SCHEMA = arrow_schema(dim=8)


def _table(rows: int, seed: int) -> pa.Table:
    """Rows with nulls, repeated values (dictionary pages), non-ASCII and random `emb`."""
    rng = np.random.default_rng(seed)
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.standard_normal(rows * 8).astype(np.float16)), 8
    )
    columns = {
        "uuid": pa.array([f"{seed}-{i:06d}" for i in range(rows)]),
        "emb": emb,
        **{
            name: pa.array(
                [None if i % 7 == 0 else f"{name}-{i // 50}-é" for i in range(rows)], pa.string()
            )
            for name in SCHEMA.names[2:]
        },
    }
    return pa.table(columns, schema=SCHEMA)


def _write(table: pa.Table, path: Path, **options: object) -> Path:
    settings: dict[str, object] = {
        "row_group_size": 1000,
        "data_page_size": 4096,
        "write_page_index": True,
        "compression": "zstd",
    }
    pq.write_table(table, path, **{**settings, **options})
    return path


def test_footers_round_trip_byte_for_byte(tmp_path: Path) -> None:
    written = _write(_table(3000, 1), tmp_path / "a.parquet")
    duck = tmp_path / "d.parquet"
    duckdb.sql(f"COPY (SELECT uuid, family FROM '{written}') TO '{duck}' (FORMAT parquet)")
    for path in (written, duck):
        data = path.read_bytes()
        size = struct.unpack("<I", data[-8:-4])[0]
        out = bytearray()
        _write_struct(out, read_footer(path).meta)
        assert bytes(out) == data[-8 - size : -8]


def test_a_spliced_file_holds_the_chosen_row_groups_in_order(tmp_path: Path) -> None:
    one, two = _table(3000, 1), _table(2500, 2)
    a = read_footer(_write(one, tmp_path / "a.parquet"))
    b = read_footer(_write(two, tmp_path / "b.parquet"))
    sink = io.BytesIO()
    splicer = Splicer(sink, a)
    for footer, group in [(b, 2), (a, 0), (a, 2)]:
        splicer.add(footer, group)
    rows = splicer.close()
    out = tmp_path / "out.parquet"
    out.write_bytes(sink.getvalue())
    expected = pa.concat_tables([two.slice(2000, 500), one.slice(0, 1000), one.slice(2000, 1000)])
    assert rows == expected.num_rows == pq.read_metadata(out).num_rows
    assert pq.read_table(out).equals(expected)
    counted = duckdb.sql(f"SELECT count(*), min(uuid) FROM '{out}'")
    assert counted is not None and counted.fetchall() == [(2500, "1-000000")]
    footer = read_footer(out)  # page indexes moved along: reading through them still works
    assert all(footer.has_offset_index(g) for g in range(3))
    assert read_rows(footer, 1, 10, 20).cast(SCHEMA).equals(one.slice(10, 10))
    assert read_rows(footer, 2, 990, 1000).cast(SCHEMA).equals(one.slice(2990, 10))
    assert pq.ParquetFile(out).metadata.row_group(2).column(2).has_column_index


def test_files_with_another_physical_schema_are_refused(tmp_path: Path) -> None:
    a = read_footer(_write(_table(1000, 1), tmp_path / "a.parquet"))
    other = _table(1000, 2).drop_columns(["common_name"])
    b = read_footer(_write(other, tmp_path / "b.parquet"))
    splicer = Splicer(io.BytesIO(), a)
    splicer.add(a, 0)
    with pytest.raises(SpliceError, match="schema differs"):
        splicer.add(b, 0)


@pytest.mark.parametrize(
    ("group", "start", "stop"),
    [(0, 0, 1000), (1, 0, 1), (1, 999, 1000), (2, 123, 877), (0, 400, 401), (2, 0, 500)],
)
def test_a_row_range_read_by_pages_equals_pyarrows(
    tmp_path: Path, group: int, start: int, stop: int
) -> None:
    table = _table(3000, 3)
    path = _write(table, tmp_path / "a.parquet")
    assert pq.read_metadata(path).row_group(0).column(1).has_offset_index
    rows = read_rows(read_footer(path), group, start, stop).cast(SCHEMA)
    assert rows.equals(table.slice(group * 1000 + start, stop - start))


def test_a_file_without_an_offset_index_cannot_be_read_by_pages(tmp_path: Path) -> None:
    path = _write(_table(1000, 4), tmp_path / "a.parquet", write_page_index=False)
    with pytest.raises(SpliceError, match="offset index"):
        read_rows(read_footer(path), 0, 10, 20)


def test_damaged_metadata_is_reported_as_such(tmp_path: Path) -> None:
    path = _write(_table(1000, 5), tmp_path / "a.parquet")
    data = bytearray(path.read_bytes())
    size = struct.unpack("<I", data[-8:-4])[0]
    data[-8 - size : -8 - size // 2] = bytes(size - size // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(SpliceError, match=r"damaged|not a plain"):
        read_footer(path)

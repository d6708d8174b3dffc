"""A slice's `emb` rows are encoded as data pages here (`parquet.list_encode`, through
`slices.write.encoded_columns`), not by pyarrow: pyarrow and DuckDB read back the same values
bit for bit, for both codecs and many pages, with an offset index and the reader's in-place
path taking them; anything but non-NULL lists of non-NULL floats is left to pyarrow, with the
same result."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from spy_testing import returned_something

from tol_dagster.parquet import list_encode, list_values
from tol_dagster.parquet.footer import read_footer
from tol_dagster.parquet.list_pages import list_pages
from tol_dagster.parquet.splice import Splicer
from tol_dagster.slices import write

ROWS = 1500  # ~2.2 pages of 768 halves
HALF = pa.float16()


def _table(rows: int, dim: int, kind: pa.DataType = HALF, nan: bool = True) -> pa.Table:
    dtype = np.dtype(kind.to_pandas_dtype())
    values = (np.random.default_rng(3).standard_normal((rows, dim)) * 0.05).astype(dtype)
    values[7, 2] = np.nan if nan else 1.5  # a NaN is a value like any other
    values[9, 0] = -0.0
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), kind), dim)
    return pa.table(
        {
            "uuid": [f"u{i}" for i in range(rows)],
            "emb": emb,
            "family": ["F'a\u00e9"] * rows,
        }
    )


def _spliced(table: pa.Table, path: Path, codec: str) -> None:
    """`table` written as a slice writes its rows: two row groups, each by `encoded_columns`."""
    schema = table.schema
    with path.open("wb") as out:
        splicer = Splicer(out, write.reference_footer(schema))
        half = table.num_rows // 2
        for part in (table.slice(0, half), table.slice(half)):
            splicer.add_columns(write.encoded_columns(part, schema, codec), part.num_rows)
        splicer.close()


def _hand_encoded(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each `emb` column chunk was encoded here (True) or left to pyarrow."""
    return returned_something(monkeypatch, list_encode, "encode_list_column")


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_encoded_pages_read_back_bit_for_bit_in_pyarrow_and_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str
) -> None:
    calls = _hand_encoded(monkeypatch)
    table = _table(ROWS, 768)
    path = tmp_path / "slice.parquet"
    _spliced(table, path, codec)
    assert calls == [True, True]
    back = pq.read_table(path)
    assert back.schema.equals(table.schema)
    assert back.column("emb").combine_chunks().values.to_numpy().view(np.uint16).tobytes() == (
        table.column("emb").combine_chunks().values.to_numpy().view(np.uint16).tobytes()
    )
    assert back.drop_columns(["emb"]).equals(table.drop_columns(["emb"]))
    meta = pq.read_metadata(path)
    chunk = meta.row_group(0).column(1)
    assert chunk.compression == {"none": "UNCOMPRESSED", "zstd": "ZSTD"}[codec]
    assert chunk.has_offset_index and not chunk.is_stats_set
    assert chunk.num_values == (ROWS // 2) * 768
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT uuid, emb::FLOAT[] FROM read_parquet(?) WHERE uuid IN ('u0', 'u7', 'u1499')"
            " ORDER BY uuid",
            [str(path)],
        ).fetchall()
    expected = table.column("emb").to_pylist()
    assert [uuid for uuid, _ in rows] == ["u0", "u1499", "u7"]
    for uuid, values in rows:
        want = np.array(expected[int(uuid[1:])], np.float32)
        assert np.array_equal(np.array(values, np.float32), want, equal_nan=True)


def test_encoded_pages_are_the_readers_regular_case_and_page_sized(tmp_path: Path) -> None:
    table = _table(ROWS, 768)
    path = tmp_path / "slice.parquet"
    _spliced(table, path, "none")
    footer = read_footer(path)
    matrices = list(
        list_pages(path, pq.read_metadata(path), "emb", 768, np.dtype("<f2"))
    )  # the gate's in-place reader: SpliceError on anything but the regular case
    assert sum(len(m) for m in matrices) == ROWS
    assert max(len(m) for m in matrices) == list_encode.PAGE_BYTES // (768 * 2)
    assert len(footer.row_groups) == 2
    assert np.concatenate(matrices).tobytes() == (
        table.column("emb").combine_chunks().values.to_numpy().tobytes()
    )


@pytest.mark.parametrize(
    "case", ["null rows", "null values", "list of 12", "float32 of 16", "float64 of 8"]
)
def test_anything_but_the_regular_case_is_left_to_pyarrow_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    calls = _hand_encoded(monkeypatch)
    dim = {"list of 12": 12, "float32 of 16": 16, "float64 of 8": 8}.get(case, 32)
    kind = {"float32 of 16": pa.float32(), "float64 of 8": pa.float64()}.get(case, HALF)
    table = _table(300, dim, kind, nan=False)  # (`Table.equals` tells NaN from NaN)
    emb = table.column("emb").combine_chunks()
    if case == "null rows":
        emb = pa.FixedSizeListArray.from_arrays(emb.values, dim, mask=pa.array(np.arange(300) == 5))
    elif case == "null values":
        values = pa.array(emb.values.to_numpy(), kind, mask=np.arange(300 * dim) == 40)
        emb = pa.FixedSizeListArray.from_arrays(values, dim)
    table = table.set_column(1, "emb", emb)
    path = tmp_path / "slice.parquet"
    _spliced(table, path, "zstd")
    regular = case == "float32 of 16"  # float64 lists of 8 are below the pattern's 16
    # (the second half of the rows holds no NULL: it is the regular case)
    assert calls == [regular, regular or case.startswith("null")]
    assert pq.read_table(path).equals(table)


def test_a_page_count_pattern_is_the_one_the_reader_checks() -> None:
    pattern = list_values.repetition_pattern(768)
    sink = io.BytesIO()
    pq.write_table(_table(10, 768).select(["emb"]), sink, compression="none")
    assert pattern * 10 in sink.getvalue()  # pyarrow's own bytes for ten rows

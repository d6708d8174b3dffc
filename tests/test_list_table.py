"""`parquet.list_table`: a table written with its list column encoded by us reads as what
pyarrow's own writer makes of the same rows, schema and metadata included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.parquet.list_table import ListTableWriter

OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": ["name"]}


FLOAT32 = pa.float32()


def _schema(dim: int, value_type: pa.DataType = FLOAT32) -> pa.Schema:
    return pa.schema(
        [
            pa.field("name", pa.string()),
            pa.field("vector", pa.list_(value_type, dim)),
            pa.field("count", pa.int64(), nullable=False),
        ],
        metadata={b"table": b"test"},
    )


def _tables(schema: pa.Schema, sizes: list[int]) -> list[pa.Table]:
    """Tables of `sizes` rows: names with NULLs, quotes and unicode; vectors of noise."""
    rng = np.random.default_rng(len(sizes))
    dim, dtype = schema.field("vector").type.list_size, schema.field("vector").type.value_type
    tables, first = [], 0
    for rows in sizes:
        names = [None if i % 7 == 3 else f"Quercus l'{i % 11}ü" for i in range(first, first + rows)]
        values = rng.standard_normal(rows * dim).astype(dtype.to_pandas_dtype())
        tables.append(
            pa.table(
                {
                    "name": pa.array(names, pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(values), dim),
                    "count": pa.array(np.arange(first, first + rows), pa.int64()),
                },
                schema=schema,
            )
        )
        first += rows
    return tables


def _write(path: Path, schema: pa.Schema, tables: list[pa.Table]) -> list[pa.Schema]:
    """Write `tables` with ListTableWriter; the schemas pyarrow's writer was opened with."""
    opened: list[pa.Schema] = []

    def open_writer(sink: Any, subset: pa.Schema, rows: int) -> pq.ParquetWriter:
        opened.append(subset)
        return pq.ParquetWriter(sink, subset, **OPTIONS)

    with open(path, "wb") as sink:
        writer = ListTableWriter(sink, schema, "vector", open_writer)
        for table in tables:
            writer.write_table(table)
        writer.close()
    return opened


@pytest.mark.parametrize(
    ("dim", "value_type"), [(768, pa.float32()), (16, pa.float16()), (24, pa.float64())]
)
def test_the_file_reads_as_pyarrows_own_with_the_list_encoded_by_us(
    tmp_path: Path, dim: int, value_type: pa.DataType
) -> None:
    schema = _schema(dim, value_type)
    tables = _tables(schema, [1, 3000, 0, 1700])
    opened = _write(tmp_path / "ours.parquet", schema, tables)
    with pq.ParquetWriter(tmp_path / "theirs.parquet", schema, **OPTIONS) as theirs:
        for table in tables:
            theirs.write_table(table)

    assert all("vector" not in subset.names for subset in opened[1:])  # the list: ours
    ours = pq.ParquetFile(tmp_path / "ours.parquet")
    assert ours.schema_arrow == schema and ours.schema_arrow.metadata == schema.metadata
    assert ours.metadata.num_row_groups == 3  # one per table with rows
    assert ours.metadata.num_rows == 4701
    assert ours.read().equals(pq.read_table(tmp_path / "theirs.parquet"))
    # DuckDB reads it too: the values of row 2000 and the NULL names
    with duckdb.connect() as con:
        nulls, vector = con.execute(
            "SELECT (SELECT count(*) FROM read_parquet($1) WHERE name IS NULL), "
            "(SELECT vector FROM read_parquet($1) WHERE count = 2000)",
            [str(tmp_path / "ours.parquet")],
        ).fetchone()
    assert nulls == sum(t["name"].null_count for t in tables)
    expected = pa.concat_tables(tables)["vector"][2000].values.to_numpy()
    assert np.array_equal(np.asarray(vector, dtype=expected.dtype), expected)


def test_a_width_not_encoded_here_goes_to_pyarrow_whole(tmp_path: Path) -> None:
    schema = _schema(8)
    tables = _tables(schema, [500, 20])
    opened = _write(tmp_path / "ours.parquet", schema, tables)
    assert all("vector" in subset.names for subset in opened)
    assert pq.read_table(tmp_path / "ours.parquet").equals(pa.concat_tables(tables))


def test_no_rows_make_an_empty_file_of_the_schema(tmp_path: Path) -> None:
    schema = _schema(16)
    _write(tmp_path / "empty.parquet", schema, [])
    table = pq.read_table(tmp_path / "empty.parquet")
    assert table.num_rows == 0 and table.schema == schema


def test_a_table_whose_fields_differ_from_the_schema_is_refused(tmp_path: Path) -> None:
    schema = _schema(16)
    (table,) = _tables(schema, [10])
    loose = table.cast(schema.set(2, pa.field("count", pa.int64(), nullable=True)))
    with pytest.raises(ValueError, match=r"(?i)schema"):
        _write(tmp_path / "ours.parquet", schema, [loose])

"""A slice reads the `emb` rows of partial pages in place (`parquet.list_values`, through
`pages.read_rows`): the same values as pyarrow's decoding, for every codec and any row range
across pages; anything but the plain regular case is decoded by pyarrow, with the same result;
a sparse taxon's rows are read run by run (`slices.read`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from spy_testing import returned_something

from tol_dagster.parquet import list_values, pages
from tol_dagster.parquet.decoded import DECODED
from tol_dagster.parquet.footer import read_footer
from tol_dagster.slices import read
from tol_dagster.slices.keys import parse_slice_key

DIM = 16
ROWS = 3000


def _write(path: Path, null_rows: tuple[int, ...] = (), **options: Any) -> pa.Table:
    rows = (np.random.default_rng(5).standard_normal((ROWS, DIM)) * 0.3).astype(np.float16)
    rows[17, 3] = np.nan
    mask = np.zeros(ROWS, bool)
    mask[list(null_rows)] = True
    values = pa.array(rows.reshape(-1), pa.float16())
    emb = pa.FixedSizeListArray.from_arrays(values, DIM, mask=pa.array(mask) if null_rows else None)
    table = pa.table({"uuid": [f"u{i}" for i in range(ROWS)], "emb": emb})
    settings = {
        "compression": "zstd",
        "row_group_size": 1000,
        "data_page_size": 8 * 1024,  # ~250 rows a page: ranges cross pages
        "write_page_index": True,
        "use_dictionary": False,
    }
    pq.write_table(table, path, **(settings | options))
    return table


def _in_place_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each read of `emb`'s pages was done in place (True) or left to pyarrow."""
    calls = returned_something(monkeypatch, pages, "regular_list_column")
    DECODED.entries.clear()
    DECODED.size = 0
    return calls


def _bits(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The values' bits (NaN equals NaN), whatever the list type reads as."""
    chunked = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    flat = pa.concat_arrays([c.flatten() for c in chunked.chunks])
    return flat.to_numpy(zero_copy_only=False).view(np.uint16)


RANGES = [(0, 1), (10, 20), (240, 270), (100, 900), (0, 1000), (999, 1000)]


@pytest.mark.parametrize("compression", ["zstd", "snappy", "none", "gzip", "brotli"])
def test_emb_rows_read_in_place_are_pyarrows_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    table = _write(tmp_path / "f.parquet", compression=compression)
    footer = read_footer(tmp_path / "f.parquet")
    calls = _in_place_calls(monkeypatch)
    for group in range(3):
        for start, stop in RANGES:
            DECODED.entries.clear()  # every range decoded, none served from the last one
            got = pages.read_rows(footer, group, start, stop, columns=["emb"])
            expected = table["emb"].slice(group * 1000 + start, stop - start)
            assert got.num_rows == stop - start
            assert np.array_equal(_bits(got["emb"]), _bits(expected)), (group, start, stop)
    assert calls and all(calls)


@pytest.mark.parametrize(
    ("why", "null_rows", "options"),
    [
        ("NULL rows", (5, 1500, 2500), {}),  # one in each row group
        ("data pages v2", (), {"data_page_version": "2.0"}),
        ("a dictionary", (), {"use_dictionary": True}),
        ("LZ4, a name for two framings", (), {"compression": "lz4"}),
        ("byte stream split", (), {"use_byte_stream_split": ["emb.list.element"]}),
    ],
)
def test_anything_unusual_is_decoded_by_pyarrow_with_the_same_rows(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    why: str,
    null_rows: tuple[int, ...],
    options: dict[str, Any],
) -> None:
    table = _write(tmp_path / "f.parquet", null_rows, **options)
    footer = read_footer(tmp_path / "f.parquet")
    calls = _in_place_calls(monkeypatch)
    for group in range(3):
        got = pages.read_rows(footer, group, 0, 1000, columns=["emb"])
        expected = table.slice(group * 1000, 1000).select(["emb"])
        assert got.cast(expected.schema)["emb"].is_null().to_pylist() == (
            expected["emb"].is_null().to_pylist()
        ), why
        valid = pc.is_valid(expected["emb"])
        assert np.array_equal(
            _bits(got.cast(expected.schema)["emb"].filter(valid)),
            _bits(expected["emb"].filter(valid)),
        ), why
    assert not any(calls), why


def test_a_list_of_floats_not_halffloat_nor_fixed_reads_in_place_only_when_regular(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32 lists of one length read in place; lists of varying length are pyarrow's."""
    regular = pa.array([[float(i)] * 16 for i in range(600)], pa.list_(pa.float32()))
    ragged = pa.array([[float(i)] * (16 + i % 2) for i in range(600)], pa.list_(pa.float32()))
    for name, column, in_place in (("regular", regular, True), ("ragged", ragged, False)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(
            pa.table({"emb": column}),
            path,
            write_page_index=True,
            data_page_size=4096,
            use_dictionary=False,
        )
        calls = _in_place_calls(monkeypatch)
        got = pages.read_rows(read_footer(path), 0, 100, 500, columns=["emb"])
        assert got.column(0).cast(column.type).to_pylist() == column[100:500].to_pylist()
        assert calls == [in_place] * len(calls) and calls, name


def test_a_damaged_emb_page_is_refused_not_read_as_other_values(tmp_path: Path) -> None:
    """Bytes inside a compressed `emb` page overwritten: pyarrow decodes it, and any disagreement
    surfaces as an error (`SpliceError`/`ArrowException`), never as different values."""
    _write(tmp_path / "f.parquet", compression="snappy")
    path = tmp_path / "f.parquet"
    data = bytearray(path.read_bytes())
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    DECODED.entries.clear()
    try:
        got = pages.read_rows(read_footer(path), 1, 0, 1000, columns=["emb"])
    except (pages.SpliceError, pa.ArrowException):
        return
    assert np.array_equal(  # the values pyarrow reads from the damaged file, if any
        _bits(got["emb"]), _bits(pq.read_table(path)["emb"].slice(1000, 1000))
    )


def test_a_sparse_taxon_decodes_only_the_emb_pages_of_its_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A family under two sources spans other families' rows in its row group (the taxon index
    gives one range): its rows are read run by run, the `emb` pages between never decoded."""
    families = ["X"] * 10 + ["Y"] * 880 + ["X"] * 10 + ["Z"] * 100
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(len(families) * DIM) % 251, pa.float16()), DIM
    )
    table = pa.table(
        {"uuid": [f"u{i}" for i in range(len(families))], "emb": emb, "family": families}
    )
    path = tmp_path / "f.parquet"
    pq.write_table(
        table, path, row_group_size=1000, data_page_size=2048, write_page_index=True,
        use_dictionary=["family"],
    )  # fmt: skip
    decoded: list[int] = []
    real = list_values.regular_list_column

    def counted(*args: Any) -> pa.Array | None:
        values = real(*args)
        if values is not None:  # `emb`'s pages: the rows they hold
            decoded.append(len(values))
        return values

    monkeypatch.setattr(pages, "regular_list_column", counted)
    DECODED.entries.clear()
    predicate = read.Predicate(parse_slice_key("family=X"))
    batches = read._matching_rows(read_footer(path), 0, 0, 910, predicate, table.schema)
    got = pa.Table.from_batches(batches, schema=table.schema)
    expected = table.filter(pc.equal(table["family"], "X"))
    assert got.equals(expected)
    assert 20 <= sum(decoded) < 200, f"{sum(decoded)} rows of emb pages decoded for 20 rows"

"""The gate reads `emb` from its pages in place (`parquet.list_pages`): the values are pyarrow's
decoding byte for byte, every row once; anything but the plain regular case falls back to
pyarrow, and the gate's scan of `emb` is the same either way (NaN, Inf, bounds, NULLs,
digests)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import MAGIC, SpliceError, page_header, read_footer
from tol_dagster.parquet.list_pages import list_pages
from tol_dagster.parquet.thrift import write_struct
from tol_dagster.schema import DEFAULT_CONFIG, EmbBounds
from tol_dagster.slices import emb_check
from tol_dagster.validation import emb_scan
from tol_dagster.validation.emb_digests import emb_matrix

DIM = 16
BOUNDS = EmbBounds(norm_min=0.2, norm_max=6.0, max_abs=2.5)


def rows_with_faults(count: int = 3000) -> np.ndarray:
    rows = (np.random.default_rng(3).standard_normal((count, DIM)) * 0.3).astype(np.float16)
    rows[17, 3] = np.nan
    rows[1200, 0] = -np.inf
    rows[2999, 5] = np.inf
    rows[40] = 0.0  # norm below the bounds
    rows[41, 2] = 9.0  # |x| above them
    rows[42, :] = np.float16(6e-8)  # subnormals
    return rows


def write(path: Path, rows: np.ndarray, null_rows: tuple[int, ...] = (), **options: Any) -> Path:
    values = pa.array(rows.reshape(-1), pa.float16())
    mask = np.zeros(len(rows), bool)
    mask[list(null_rows)] = True
    emb = pa.FixedSizeListArray.from_arrays(values, DIM, mask=pa.array(mask) if null_rows else None)
    table = pa.table({"uuid": [f"u{i}" for i in range(len(rows))], "emb": emb})
    settings = {
        "compression": "zstd",
        "row_group_size": 1000,
        "data_page_size": 8 * 1024,  # several pages per row group
        "write_page_index": True,
        "use_dictionary": False,
    }
    pq.write_table(table, path, **(settings | options))
    return path


def pages(path: Path, dim: int = DIM) -> list[np.ndarray]:
    metadata = pq.ParquetFile(path).metadata
    return list(list_pages(path, metadata, "emb", dim, np.dtype(np.float16)))


def pages_matrix(path: Path, dim: int = DIM) -> np.ndarray:
    return np.concatenate(pages(path, dim))


def arrow_scan(path: Path) -> emb_scan.EmbScan:
    return emb_scan._scan(emb_scan._arrow_batches(pq.ParquetFile(path)), BOUNDS)


def assert_same_scan(found: emb_scan.EmbScan | str, expected: emb_scan.EmbScan) -> None:
    assert isinstance(found, emb_scan.EmbScan)
    assert (found.rows, found.null_rows, found.nonfinite_rows, found.first_nonfinite_row) == (
        expected.rows,
        expected.null_rows,
        expected.nonfinite_rows,
        expected.first_nonfinite_row,
    )
    assert found.digests is not None and expected.digests is not None
    assert found.digests.tobytes() == expected.digests.tobytes()
    assert found.bounds is not None and expected.bounds is not None
    assert (found.bounds.outside, found.bounds.examples, found.bounds.norm_range) == (
        expected.bounds.outside,
        expected.bounds.examples,
        expected.bounds.norm_range,
    )


def test_a_sample_files_pages_are_pyarrows_values(small_sample: Path) -> None:
    """The real layout (768 values, ZSTD, the sample's writer): read in place, not by pyarrow."""
    for path in sorted((small_sample / DEFAULT_CONFIG).glob("*.parquet")):
        expected = emb_matrix(pq.read_table(path, columns=["emb"])["emb"])
        found = pages_matrix(path, dim=expected.shape[1])
        assert found.shape == expected.shape
        assert found.tobytes() == expected.tobytes()


@pytest.mark.parametrize("compression", ["zstd", "snappy", "none", "gzip", "brotli"])
def test_every_codec_reads_in_place_and_scans_as_pyarrow(tmp_path: Path, compression: str) -> None:
    rows = rows_with_faults()
    path = write(tmp_path / "f.parquet", rows, compression=compression)
    assert pages_matrix(path).tobytes() == rows.tobytes()
    scan = emb_scan.scan_emb(path, pq.ParquetFile(path), BOUNDS)
    assert_same_scan(scan, arrow_scan(path))
    assert isinstance(scan, emb_scan.EmbScan)
    assert scan.nonfinite_rows == 3 and scan.first_nonfinite_row == 17
    assert scan.bounds is not None and [row for row, _, _ in scan.bounds.examples] == [40, 41, 42]


@pytest.mark.parametrize(
    ("why", "null_rows", "options"),
    [
        ("NULL rows", (5, 2500), {}),
        ("data pages v2", (), {"data_page_version": "2.0"}),
        ("a dictionary", (), {"use_dictionary": True}),
        ("LZ4, a name for two framings", (), {"compression": "lz4"}),
        ("byte stream split", (), {"use_byte_stream_split": ["emb.list.element"]}),
    ],
)
def test_anything_unusual_is_refused_and_scanned_by_pyarrow(
    tmp_path: Path, why: str, null_rows: tuple[int, ...], options: dict[str, Any]
) -> None:
    path = write(tmp_path / "f.parquet", rows_with_faults(), null_rows, **options)
    with pytest.raises(SpliceError):
        pages_matrix(path)
    scan = emb_scan.scan_emb(path, pq.ParquetFile(path), BOUNDS)
    assert_same_scan(scan, arrow_scan(path))
    assert isinstance(scan, emb_scan.EmbScan) and scan.null_rows == len(null_rows), why


def test_lists_of_other_lengths_are_left_to_pyarrow(tmp_path: Path) -> None:
    rows = np.ones((100, 12), np.float16)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float16()), 12)
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"emb": emb}), path)
    with pytest.raises(SpliceError):
        pages(path, 12)
    scan = emb_scan.scan_emb(path, pq.ParquetFile(path), None)
    assert isinstance(scan, emb_scan.EmbScan) and scan.rows == 100 and not scan.nonfinite_rows


def test_a_damaged_page_is_left_to_pyarrow_to_report(tmp_path: Path) -> None:
    """Bytes inside a compressed `emb` page overwritten: the scan reports what pyarrow finds
    (the values it decodes, or why it cannot)."""
    path = write(tmp_path / "f.parquet", rows_with_faults(), compression="snappy")
    data = bytearray(path.read_bytes())
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    found = emb_scan.scan_emb(path, pq.ParquetFile(path), BOUNDS)
    try:
        expected: emb_scan.EmbScan | str = arrow_scan(path)
    except Exception as error:  # the message scan_emb gives is pyarrow's
        expected = f"'emb' does not read ({error})"
    if isinstance(expected, str):
        assert found == expected
    else:
        assert_same_scan(found, expected)


def test_a_footer_promising_more_rows_than_the_pages_hold_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", rows_with_faults())
    footer = read_footer(path)
    meta = footer.meta.copy()
    group = meta.get(field_ids.FILE_ROW_GROUPS)[1][0]
    group.set(field_ids.RG_NUM_ROWS, group.get(field_ids.RG_NUM_ROWS) + 1)
    tail = bytearray()
    write_struct(tail, meta)
    data = path.read_bytes()
    body = data[: -8 - struct.unpack("<I", data[-8:-4])[0]]
    lying = tmp_path / "lying.parquet"
    lying.write_bytes(body + bytes(tail) + struct.pack("<I", len(tail)) + MAGIC)
    with pytest.raises(SpliceError, match="row group 0"):
        pages(lying)


@pytest.mark.parametrize("field", [field_ids.HEADER_UNCOMPRESSED, field_ids.HEADER_COMPRESSED])
def test_a_page_header_claiming_impossible_sizes_is_refused_before_any_allocation(
    tmp_path: Path, field: int
) -> None:
    """A hostile file's first `emb` page claims 1 TB (or a negative size): refused as not the
    plain case, never allocated or read."""
    path = write(tmp_path / "f.parquet", rows_with_faults(), compression="none")
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    with open(path, "rb") as handle:
        header, size = page_header(path, handle, column.data_page_offset, 1 << 20)
    for claim in (1 << 40, -5):
        changed = header.copy()
        changed.set(field, claim)
        encoded = bytearray()
        write_struct(encoded, changed)
        data = path.read_bytes()
        start = column.data_page_offset
        hostile = tmp_path / "hostile.parquet"
        hostile.write_bytes(data[:start] + bytes(encoded) + data[start + size :])
        with pytest.raises(SpliceError, match="sizes do not fit"):  # on the first page, at once
            pages(hostile)


def test_a_file_without_rows_scans_and_digests_to_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", np.zeros((0, DIM), np.float16))
    parquet = pq.ParquetFile(path)
    scan = emb_scan.scan_emb(path, parquet, BOUNDS)
    assert isinstance(scan, emb_scan.EmbScan) and scan.rows == 0 and not scan.nonfinite_rows
    assert scan.digests is not None and scan.digests.size == 0
    for group in range(parquet.num_row_groups):
        digests = emb_check._digests(path, parquet, group)
        assert digests is not None and digests.size == 0

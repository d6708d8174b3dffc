"""The gate's `emb` scan reads float16 from its bits where that is cheaper; every answer is the
one the float path gives, bit for bit, on the values that make bit tricks go wrong (NaN, Inf,
signed zeros, subnormals, rows of zeros, NULL rows and NULL values)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from tol_dagster.schema import EmbBounds
from tol_dagster.validation import emb_norms, emb_scan
from tol_dagster.validation.emb_digests import emb_matrix

DIM = 16


def awkward_rows() -> np.ndarray:
    """Random float16 rows, then rows of each awkward kind."""
    rows = np.random.default_rng(5).standard_normal((64, DIM)).astype(np.float16)
    rows[1, 3] = np.nan
    rows[2, 0] = np.inf
    rows[3, 7] = -np.inf
    rows[4] = 0.0
    rows[5] = -0.0
    rows[6, ::2] = -0.0
    rows[6, 1::2] = 0.0
    rows[7] = np.float16(6e-8)  # the smallest subnormal
    rows[8] = -np.float16(65504)  # the largest magnitude
    rows[9, 5] = -np.float16(3e-6)
    rows[9, :5] = 0.0
    rows[10, 2] = np.nan
    rows[10, 3] = np.inf
    return rows


def as_arrow(rows: np.ndarray, null_rows: Sequence[int] = ()) -> pa.FixedSizeListArray:
    values = pa.array(rows.reshape(-1), pa.float16())
    mask = np.zeros(len(rows), bool)
    mask[list(null_rows)] = True
    return pa.FixedSizeListArray.from_arrays(values, DIM, mask=pa.array(mask))


def float_peaks(rows: np.ndarray) -> np.ndarray:
    """Each row's largest |x| by numpy's conversion to float32 (NaN where a row holds one)."""
    return np.abs(rows.astype(np.float32)).max(axis=1)


def test_peaks_from_bits_equal_the_float_peaks_where_finite_and_are_inf_where_not() -> None:
    rows = awkward_rows()
    from_bits = emb_norms.norms_and_peaks(rows)[1]
    from_floats = float_peaks(rows)
    finite = np.isfinite(from_floats)
    assert from_bits[finite].tobytes() == from_floats[finite].tobytes()
    assert np.flatnonzero(~finite).tolist() == [1, 2, 3, 10]
    assert (from_bits[~finite] == np.inf).all()


def test_peaks_of_wider_floats_are_not_finite_exactly_where_a_row_is_not() -> None:
    rows = awkward_rows().astype(np.float64)
    rows[11, 0] = 1e300  # finite in float64, Inf once narrowed to float32
    peaks = emb_norms.norms_and_peaks(rows)[1]
    assert np.flatnonzero(~np.isfinite(peaks)).tolist() == [1, 2, 3, 10]
    assert peaks[11] == 1e300


def test_magnitudes_from_bits_are_numpys_conversion_bit_for_bit() -> None:
    """Every finite float16 pattern, both signs, subnormals and zeros included."""
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    halves = patterns.view(np.float16)
    finite = np.isfinite(halves)
    out = np.empty(patterns.size, np.uint32)
    from_bits = emb_norms._half_bits_to_single(patterns & np.uint16(0x7FFF), out)
    assert from_bits[finite].tobytes() == np.abs(halves[finite].astype(np.float32)).tobytes()
    assert np.isfinite(from_bits).all()  # Inf and NaN rows: their peaks mark them


@pytest.mark.parametrize("rows", [0, 1, 127, 128, 129, 300])
def test_norms_in_blocks_are_those_of_numpys_conversion_bit_for_bit(rows: int) -> None:
    """Rows measured a block at a time (128 rows of 768 values) give each row's norm and peak
    as one `vecdot` over numpy's float32 conversion of the whole matrix does, block seams and a
    short last block included."""
    matrix = (np.random.default_rng(rows).standard_normal((rows, 768)) / 27).astype(np.float16)
    matrix[rows // 2 :: 7, 5] = np.float16(6e-8)  # subnormals, in every block past the first
    norms, peaks = emb_norms.norms_and_peaks(matrix)
    values = matrix.astype(np.float32)
    assert norms.tobytes() == np.sqrt(np.vecdot(values, values)).tobytes()
    expected_peaks = np.abs(values).max(axis=1) if rows else np.empty(0, np.float32)
    assert peaks.tobytes() == expected_peaks.tobytes()


def test_peaks_from_bits_order_every_float16_pattern_as_its_value() -> None:
    """Each pattern alone in a row, and pairs of patterns (a row's larger |x| wins whatever the
    signs): the peak is numpy's |x| where finite, Inf where the row holds Inf or NaN."""
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    pairs = np.stack([halves, np.random.default_rng(7).permutation(halves)], axis=1)
    for rows in (halves.reshape(-1, 1), pairs):
        peaks = emb_norms.norms_and_peaks(rows)[1]
        with np.errstate(invalid="ignore"):
            expected = np.abs(rows.astype(np.float32)).max(axis=1)
        finite = np.isfinite(expected)
        assert peaks[finite].tobytes() == expected[finite].tobytes()
        assert (peaks[~finite] == np.inf).all()
    assert emb_norms.norms_and_peaks(np.empty((3, 0), np.float16))[1].tolist() == [0, 0, 0]


def test_bounds_scan_details_are_those_of_the_float_path() -> None:
    rows = awkward_rows()
    bounds = EmbBounds(norm_min=1.0, norm_max=6.0, max_abs=3.0)
    scan = emb_norms.BoundsScan(bounds)
    scan.add(*emb_norms.norms_and_peaks(rows), None, 0)
    values = rows.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", values, values))
    peaks = float_peaks(rows)
    seen = np.isfinite(norms) & np.isfinite(peaks)
    bad = seen & ((norms < 1.0) | (norms > 6.0) | (peaks > 3.0))
    assert scan.outside == int(bad.sum())
    assert [(r, n, p) for r, n, p in scan.examples] == [
        (int(i), float(norms[i]), float(peaks[i])) for i in np.flatnonzero(bad)[:20]
    ]
    assert scan.max_abs_seen == float(peaks[seen].max())


def test_nonfinite_rows_from_bits_equal_arrows_is_finite() -> None:
    rows = awkward_rows()
    for null_rows in ([], [2, 4, 30]):
        emb = as_arrow(rows, null_rows)
        valid = emb.is_valid().to_numpy(zero_copy_only=False) if null_rows else None
        matrix = emb_matrix(emb)
        assert matrix is not None
        peaks = emb_norms.norms_and_peaks(matrix)[1]
        from_bits = emb_scan._nonfinite_rows(emb, peaks, valid)
        from_arrow = emb_scan._nonfinite_rows(emb, None, None)
        assert from_bits.tolist() == from_arrow.tolist() == sorted({1, 2, 3, 10} - set(null_rows))


def test_a_null_value_inside_a_row_is_found_by_arrow() -> None:
    rows = awkward_rows()[20:24]
    values = pa.array(rows.reshape(-1), pa.float16(), mask=np.arange(rows.size) == DIM + 2)
    emb = pa.FixedSizeListArray.from_arrays(values, DIM)
    matrix = emb_matrix(emb)
    assert matrix is not None
    peaks = emb_norms.norms_and_peaks(matrix)[1]
    assert emb_scan._nonfinite_rows(emb, peaks, None).tolist() == [1]


@pytest.mark.parametrize("fault", ["none", "norm too large", "peak too large", "nan", "inf"])
def test_bounds_scan_of_rows_all_inside_is_that_of_the_row_by_row_path(fault: str) -> None:
    """A batch with no NULL row is first judged by three reductions (all finite and inside:
    done); its verdict, ranges and examples are those of the row-by-row path, which a batch
    with a validity mask always takes, whether or not a row is outside."""
    rows = (np.random.default_rng(3).standard_normal((200, DIM)) / 2).astype(np.float16)
    rows[:, 0] = 2.0  # every norm in [2, 6), every peak in [2, 3)
    rows[57] = {
        "none": rows[57],
        "norm too large": np.float16(2.9),
        "peak too large": np.float16(0.0),
        "nan": np.float16(np.nan),
        "inf": np.float16(-np.inf),
    }[fault]
    if fault == "peak too large":
        rows[57, 3] = 3.5
    bounds = EmbBounds(norm_min=1.0, norm_max=6.0, max_abs=3.0)
    norms, peaks = emb_norms.norms_and_peaks(rows)
    scans = [emb_norms.BoundsScan(bounds) for _ in range(2)]
    for start in (0, 100):
        scans[0].add(norms[start : start + 100], peaks[start : start + 100], None, start)
        scans[1].add(
            norms[start : start + 100], peaks[start : start + 100], np.ones(100, bool), start
        )
    assert scans[0] == scans[1]
    assert scans[0].outside == (fault in ("norm too large", "peak too large"))
    assert scans[0].rows == 200 and scans[0].norm_range[0] >= 2.0

"""Sums over runs of rows (`sorted_runs.sum_row_runs`), what the centroids are made of."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tol_dagster.derived.sorted_runs import sum_row_runs


def _in_order(matrix: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each run's rows added one after another, in Python: the order the function promises."""
    ends = [*starts[1:].tolist(), len(matrix)][: len(starts)]
    sums = []
    for start, end in zip(starts.tolist(), ends, strict=True):
        total = matrix[start].copy()
        for row in range(start + 1, end):
            total += matrix[row]
        sums.append(total)
    return np.array(sums).reshape(len(starts), matrix.shape[1])


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), max_size=40),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_each_run_is_its_rows_added_in_order(lengths: list[int], width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Magnitudes that differ by orders: the order of the additions shows in the last bits.
    matrix = rng.standard_normal((sum(lengths), width)) * 10.0 ** rng.integers(-8, 8, (1, width))
    starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64) if lengths else np.zeros(0, np.int64)
    sums = sum_row_runs(matrix, starts)
    assert sums.shape == (len(lengths), width)
    assert np.array_equal(sums, _in_order(matrix, starts))
    if lengths:
        np.testing.assert_allclose(sums, np.add.reduceat(matrix, starts, axis=0), rtol=1e-12)


def test_the_matrix_is_left_as_it_was() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(6, 2)
    before = matrix.copy()
    sums = sum_row_runs(matrix, np.array([0, 1, 4]))
    assert sums.tolist() == [[0, 1], [2 + 4 + 6, 3 + 5 + 7], [8 + 10, 9 + 11]]
    assert np.array_equal(matrix, before)

"""Per-row plausibility of `emb`: `emb_norms_within_bounds`.

A value changed inside a page can still be finite; a row whose L2 norm or largest |x| leaves
the bounds the contract pins for the config (`schema.EMB_BOUNDS`) is corrupt or comes from
another model. The rows are measured on the gate's one pass over `emb` (`emb_scan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tol_dagster.schema import EmbBounds
from tol_dagster.validation.checks import EMB_NORMS_WITHIN_BOUNDS, CheckResult

#: Rows listed in a failure's message and details.
MAX_NAMED = 5
MAX_REPORTED = 20


@dataclass
class BoundsScan:
    """Rows whose L2 norm or largest |x| fall outside `bounds`, over batches of one file.

    Non-finite rows are left to `emb_finite` and NULL rows are skipped: one fault, one check.
    """

    bounds: EmbBounds
    rows: int = 0
    outside: int = 0
    examples: list[tuple[int, float, float]] = field(default_factory=list)  # row, norm, max|x|
    norm_range: tuple[float, float] = (float("inf"), float("-inf"))
    max_abs_seen: float = 0.0

    def add(
        self,
        matrix: np.ndarray,
        valid: np.ndarray | None,
        first_row: int,
        largest: np.ndarray | None = None,
    ) -> None:
        """Measure a batch of rows (`largest`: its `largest_bits`, if already computed)."""
        values = magnitudes(matrix)
        norms = np.sqrt(np.einsum("ij,ij->i", values, values))
        peaks = _peaks(matrix, values, largest) if values.shape[1] else norms
        seen = np.isfinite(norms) & np.isfinite(peaks)
        if valid is not None:
            seen &= valid
        self.rows += len(norms)
        if seen.any():
            low, high = float(norms[seen].min()), float(norms[seen].max())
            self.norm_range = (min(self.norm_range[0], low), max(self.norm_range[1], high))
            self.max_abs_seen = max(self.max_abs_seen, float(peaks[seen].max()))
        bounds = self.bounds
        bad = seen & (
            (norms < bounds.norm_min) | (norms > bounds.norm_max) | (peaks > bounds.max_abs)
        )
        if not bad.any():
            return
        where = np.flatnonzero(bad)
        self.outside += where.size
        for index in where[: max(0, MAX_REPORTED - len(self.examples))].tolist():
            self.examples.append((first_row + index, float(norms[index]), float(peaks[index])))


#: 2**112: float16's bits shifted into a float32's, times this, are the same number (see
#: `magnitudes`).
_HALF_TO_SINGLE = np.float32(2.0**112)


def magnitudes(matrix: np.ndarray) -> np.ndarray:
    """|x| of every value, in float32 (squares and maxima need no sign).

    From float16 without numpy's conversion (about 4x slower here): a half's exponent and
    mantissa shifted 13 bits up are a float32 of the same digits, 2**112 times too small, and
    multiplying by 2**112 is exact, subnormals included. Inf and NaN come out finite and
    large: their rows are `emb_finite`'s, and `_peaks` (from the bits) leaves them out."""
    if matrix.dtype != np.float16:
        return np.abs(matrix.astype(np.float32))
    bits = (matrix.view(np.uint16) & np.uint16(0x7FFF)).astype(np.uint32)
    bits <<= np.uint32(13)
    values = bits.view(np.float32)
    values *= _HALF_TO_SINGLE
    return values


def _float_peaks(values: np.ndarray) -> np.ndarray:
    """Each row's largest |x| (NaN if the row holds one) from float32 magnitudes."""
    return values.max(axis=1)


def largest_bits(matrix: np.ndarray) -> np.ndarray:
    """Each float16 row's largest bit pattern with the sign cleared: with the sign bit cleared
    a larger magnitude has a larger pattern (Inf and NaN, exponent all ones, the largest of
    all), so this is the row's largest |x|, and the row holds Inf or NaN exactly when it is at
    least INF_BITS."""
    return (matrix.view(np.uint16) & np.uint16(0x7FFF)).max(axis=1)


#: float16's +Inf: a pattern at least this large (sign cleared) is Inf or NaN.
INF_BITS = np.uint16(0x7C00)


def _peaks(matrix: np.ndarray, values: np.ndarray, largest: np.ndarray | None) -> np.ndarray:
    """Each row's largest |x| in float32, from float16's bit patterns when it can (no
    conversion, and Inf and NaN stay what they are: `largest_bits`, or `largest` when given).
    `values` are the float32 magnitudes (`magnitudes`) for other types."""
    if matrix.dtype != np.float16:
        return _float_peaks(values)
    if largest is None:
        largest = largest_bits(matrix)
    return largest.view(np.float16).astype(np.float32)


def bounds_result(
    name: str, scan: BoundsScan, uuid_at: dict[int, str | None] | None
) -> CheckResult:
    """`emb_norms_within_bounds` of one file: failing rows named by row, uuid and value."""
    bounds = scan.bounds
    details: dict[str, object] = {
        "bounds": {
            "norm_min": bounds.norm_min,
            "norm_max": bounds.norm_max,
            "max_abs": bounds.max_abs,
        },
        "rows": scan.rows,
        "rows_outside": scan.outside,
        "norm_range_seen": list(scan.norm_range)
        if scan.rows and scan.norm_range[0] <= scan.norm_range[1]
        else None,
        "max_abs_seen": scan.max_abs_seen,
    }
    if not scan.outside:
        return CheckResult(
            EMB_NORMS_WITHIN_BOUNDS,
            True,
            f"{name}: emb of all {scan.rows:,} rows within {bounds.describe()}",
            details,
        )
    named = []
    listed = []
    for row, norm, peak in scan.examples:
        uuid = (uuid_at or {}).get(row)
        listed.append({"row": row, "uuid": uuid, "norm": norm, "max_abs": peak})
        named.append(f"row {row} (uuid {uuid!r}) norm {norm:.4g}, max |x| {peak:.4g}")
    details["outside"] = listed
    return CheckResult(
        EMB_NORMS_WITHIN_BOUNDS,
        False,
        f"{name}: {scan.outside:,} rows have emb outside {bounds.describe()}: "
        + "; ".join(named[:MAX_NAMED])
        + (f"; and {scan.outside - MAX_NAMED:,} more" if scan.outside > MAX_NAMED else "")
        + ": the vectors are corrupt or not this config's model; tell upstream",
        details,
    )

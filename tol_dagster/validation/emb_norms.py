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
        self, values: np.ndarray, peaks: np.ndarray, valid: np.ndarray | None, first_row: int
    ) -> None:
        """Measure a batch of rows from their `magnitudes` and `row_peaks`."""
        norms = np.sqrt(np.einsum("ij,ij->i", values, values))
        if not values.shape[1]:
            peaks = norms
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
#: The least magnitude `magnitudes` gives a float16 Inf or NaN (the largest finite is 65504).
_HALF_NONFINITE = np.float32(2.0**16)


def magnitudes(matrix: np.ndarray) -> np.ndarray:
    """|x| of every value, in float32 for float16 and float32 (squares and maxima need no
    sign), float64 for float64.

    From float16 without numpy's conversion (about 4x slower here): a half's exponent and
    mantissa shifted 13 bits up are a float32 of the same digits, 2**112 times too small, and
    multiplying by 2**112 is exact, subnormals included. Inf and NaN come out finite and
    large (at least 2**16): `row_peaks` makes their rows' peaks Inf."""
    if matrix.dtype != np.float16:
        return np.abs(matrix.astype(np.promote_types(matrix.dtype, np.float32)))
    bits = (matrix.view(np.uint16) & np.uint16(0x7FFF)).astype(np.uint32)
    bits <<= np.uint32(13)
    values = bits.view(np.float32)
    values *= _HALF_TO_SINGLE
    return values


def row_peaks(matrix: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's largest |x| from its `magnitudes`: not finite exactly when the row holds
    Inf or NaN (Inf for float16 rows, whose magnitudes are finite; NaN if one is there for
    wider floats). Zero for rows of no values."""
    if not values.shape[1]:
        return np.zeros(values.shape[0], values.dtype)
    peaks = values.max(axis=1)
    if matrix.dtype == np.float16:
        peaks[peaks >= _HALF_NONFINITE] = np.inf
    return peaks


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

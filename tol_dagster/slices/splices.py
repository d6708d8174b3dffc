"""Partial row groups spliced page by page (`plan_page_splices`): where a slice covers a row
group only partly, the pages wholly inside its rows are copied as bytes and only the pages at
the range's ends are decoded and encoded again (`parquet.page_splice`; `read` decodes, `write`
splices).

A range is spliced only when some column has a page wholly inside it and every row of it
satisfies the key, decoded and tested here (the taxon index only locates); anything else, and
any anomaly of its pages, reads and filters the range as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeGuard

import numpy as np
import pyarrow as pa

from tol_dagster.parquet.footer import Footer, SpliceError
from tol_dagster.parquet.page_splice import RangePlan, plan_range
from tol_dagster.parquet.pages import read_rows
from tol_dagster.slices import read
from tol_dagster.slices.keys import SliceKey
from tol_dagster.slices.locate import Copy, Scan, Span, Splice, row_groups

logger = logging.getLogger("tol_dagster.slices.splices")

#: Copy the pages wholly inside a partial row group as bytes (tests and the benchmark turn it
#: off to compare).
PAGE_SPLICES = True
#: Spans of fewer rows are read, not spliced: a `emb` page holds ~680 rows, the two end pages
#: are decoded and encoded anyway, and planning parses the file's footer up front (~50 ms for
#: upstream's files) where reading would parse it later, overlapping the writer.
SPLICE_MIN_ROWS = 4096


def plan_page_splices(key: SliceKey, scans: Sequence[Scan]) -> list[Scan]:
    """`scans` with each partial row group of a page-indexed file that has pages wholly inside
    its span, and whose rows there all satisfy `key` (decoded and tested here: the index only
    locates), made a `Splice`: those pages are copied as bytes, not decoded and encoded."""
    if not (read.PAGE_READS and PAGE_SPLICES):
        return list(scans)
    predicate = read.Predicate(key)
    result = []
    for scan in scans:
        if not any(_worth_planning(piece) for piece in scan.pieces):
            result.append(scan)
            continue
        footer = read.page_indexed(scan)
        if footer is None:
            result.append(scan)
            continue
        starts = row_groups(scan.file.path)[0]
        pieces: list[Span | Copy | Splice] = []
        for piece in scan.pieces:
            if _worth_planning(piece):
                pieces += _split(footer, starts, piece, predicate)
            else:
                pieces.append(piece)
        result.append(Scan(scan.file, tuple(pieces), scan.row_groups))
    return result


def _worth_planning(piece: Span | Copy | Splice) -> TypeGuard[Span]:
    return isinstance(piece, Span) and piece.stop - piece.start >= SPLICE_MIN_ROWS


def _split(
    footer: Footer, starts: np.ndarray, span: Span, predicate: read.Predicate
) -> list[Span | Splice]:
    """`span` cut at row-group boundaries into the ranges to splice and those to read (the
    latter merged again), or `span` itself when nothing of it can be spliced."""
    pieces: list[Span | Splice] = []
    first = int(np.searchsorted(starts, span.start, side="right")) - 1
    for group, low, high in read.group_ranges(starts, first, span):
        plan = _splice_plan(footer, group, low, high, predicate)
        base, last = int(starts[group]), pieces[-1] if pieces else None
        if plan is not None:
            pieces.append(Splice(group, plan))
        elif isinstance(last, Span) and last.stop == base + low:
            pieces[-1] = Span(last.start, base + high, last.rows + high - low)
        else:
            pieces.append(Span(base + low, base + high, min(span.rows, high - low)))
    return pieces if any(isinstance(p, Splice) for p in pieces) else [span]


def _splice_plan(
    footer: Footer, group: int, low: int, high: int, predicate: read.Predicate
) -> RangePlan | None:
    """How to splice rows [low, high) of `group`, if some of its pages can be copied and all
    its rows satisfy the key; None otherwise (the rows are read and filtered instead)."""
    try:
        plan = plan_range(footer, group, low, high, decoded=predicate.columns)
        if not plan.runs:
            return None
        keys = read_rows(footer, group, low, high, columns=predicate.columns)
    except (SpliceError, pa.ArrowException, OSError) as error:
        logger.warning(f"{error}; decoding rows {low}..{high} of row group {group} instead")
        return None
    return plan if predicate.keep(keys).num_rows == high - low else None

"""The decoded-page cache a rank pass reads through (`parquet.decoded`): bounded by its bytes,
least recently used dropped first, an entry served only for its own file version."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tol_dagster.parquet.decoded import DecodedChunk, DecodedPages

FOOTER: Any = object()  # a parsed file version: entries are matched by identity


def _chunk(megabytes: int, footer: Any = FOOTER) -> DecodedChunk:
    column = pa.chunked_array([pa.array([b"x" * (1 << 20)] * megabytes, pa.binary(1 << 20))])
    return DecodedChunk(footer, [], 0, 0, (0, megabytes), column)


def test_the_cache_keeps_its_bytes_under_its_limit_dropping_the_least_recently_used() -> None:
    pages = DecodedPages(limit=10 << 20)
    for number in range(4):
        pages.put((1, number), _chunk(3))
    assert pages.get((1, 0), FOOTER) is None, "the oldest was dropped for the fourth"
    assert pages.get((1, 1), FOOTER) is not None  # now the most recently used
    pages.put((1, 4), _chunk(3))

    assert sorted(key for _, key in pages.entries) == [1, 3, 4]
    assert pages.size == 9 << 20 <= pages.limit


def test_a_chunk_over_the_limit_is_not_kept_and_replaces_nothing_it_does_not_own() -> None:
    pages = DecodedPages(limit=4 << 20)
    pages.put((1, 0), _chunk(2))
    pages.put((1, 1), _chunk(5))
    pages.put((1, 0), _chunk(1))  # a new range of the same column chunk replaces its old one

    assert list(pages.entries) == [(1, 0)] and pages.size == 1 << 20
    assert pages.get((1, 1), FOOTER) is None
    assert pages.get((1, 0), object()) is None, "another version of the file"

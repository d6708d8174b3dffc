"""Decoded pages kept for the next read of the same column chunk (`parquet.pages.read_rows`).

A whole rank reads its values in the mirror's order, and neighbouring values share pages (a
50k-row row group's `uuid` is a single page): with this, each page is decoded once, not once per
value. Keyed by the footer (the parsed file version) and the column chunk's offset.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import pyarrow as pa

from tol_dagster.parquet.footer import Footer
from tol_dagster.parquet.thrift import Struct


@dataclasses.dataclass(frozen=True)
class DecodedChunk:
    """A column chunk's checked offset index (`locations`) and its pages `first`..`last`
    decoded (`column`, rows `covered` of the row group)."""

    footer: Footer
    locations: list[Struct]
    first: int
    last: int
    covered: tuple[int, int]
    column: pa.ChunkedArray

    def covers(self, first: int, last: int) -> bool:
        return self.first <= first and last <= self.last


class DecodedPages:
    """The last decoded pages of recently read column chunks, up to `limit` bytes, least
    recently used dropped first; shared by the reader's threads."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.entries: OrderedDict[tuple[int, int], DecodedChunk] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, int], footer: Footer) -> DecodedChunk | None:
        with self.lock:
            known = self.entries.get(key)
            if known is None or known.footer is not footer:  # the entry holds its footer: ids stay
                return None
            self.entries.move_to_end(key)
            return known

    def with_values(self, key: tuple[int, int], known: DecodedChunk) -> pa.ChunkedArray:
        """The column of `known`, read again, with its values: a dictionary's looked up once
        for all its rows and kept so, as the next reads of a rank pass need them too (looked
        up per read, ~10 us a column of each row group, it was 8% of a pass of 40,000 species)."""
        if not pa.types.is_dictionary(known.column.type):
            return known.column
        column = values_of(known.column)
        self.put(key, dataclasses.replace(known, column=column))
        return column

    def put(self, key: tuple[int, int], chunk: DecodedChunk) -> None:
        with self.lock:
            old = self.entries.pop(key, None)
            self.size -= _bytes(old)
            if _bytes(chunk) > self.limit:
                return
            self.entries[key] = chunk
            self.size += _bytes(chunk)
            while self.size > self.limit:
                self.size -= _bytes(self.entries.popitem(last=False)[1])


def values_of(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` with its values, when it was decoded as a dictionary (`dictionary_decode`:
    half the cost of a cast)."""
    if pa.types.is_dictionary(column.type):
        chunks = [chunk.dictionary_decode() for chunk in column.chunks]
        return pa.chunked_array(chunks, column.type.value_type)
    return column


def _bytes(chunk: DecodedChunk | None) -> int:
    return 0 if chunk is None else chunk.column.nbytes


#: Bytes of decoded pages kept for the next reads (`DecodedPages`): a rank pass reads its values
#: in mirror order, so only the last row groups' pages come back. Over 1,500 families of the
#: bench sample, 64 MB decoded 0.5% more than 256 MB (which filled: 210 MB, each worker's RSS
#: 150 MB higher), over 4,000 species the same bytes (0.1%); 32 MB decoded twice as much.
DECODED_PAGES_BYTES = 64 << 20
DECODED = DecodedPages(DECODED_PAGES_BYTES)

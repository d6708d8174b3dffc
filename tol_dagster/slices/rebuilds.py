"""Which slices to rebuild after a resync: those whose taxa have rows in a file that changed.

Dagster cannot know which slice depends on which mirror file: that mapping is in the data (the
taxon index). The old and the new index together name every file a slice's rows were or are in.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.slices.locate import locate


def affected_slices(
    keys: Iterable[str | SliceKey],
    old_index: pa.Table | None,
    new_index: pa.Table,
    changed_files: set[str],
    *,
    built: Iterable[str] | None = None,
) -> list[str]:
    """Canonical names of the slices to rebuild after a resync, in the order of `keys`.

    A slice is affected when its taxon has rows, by the old or the new index, in a file that
    changed, appeared or disappeared (`changed_files`, by file name). Keys not in `built`
    (when given) and every key when there is no old index are included: never built.
    """
    done = None if built is None else {parse_slice_key(str(b)).name for b in built}
    names: dict[str, None] = {}
    for item in keys:
        key = item if isinstance(item, SliceKey) else parse_slice_key(item)
        fresh = old_index is None or (done is not None and key.name not in done)
        if fresh or any(
            _touches(key, index, changed_files)
            for index in (old_index, new_index)
            if index is not None
        ):
            names[key.name] = None
    return list(names)


def _touches(key: SliceKey, index: pa.Table, changed_files: set[str]) -> bool:
    """`key`'s rows, by `index`, lie in a changed file (any change, when the index cannot
    locate the key)."""
    spans = locate(key, index)
    return bool(changed_files) if spans is None else not changed_files.isdisjoint(spans)

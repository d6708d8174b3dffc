"""Where per-file group counts join across the seams between mirror files.

The mirror is sorted by lineage, so each file's groups at a rank (runs of equal lineage
prefixes) are sorted, and a group cut by a file boundary is the last group of one file and the
first of the next (of several, for a coarse rank: one kingdom spans many files). Summing the
files' counts is then local: a file's first group merges into the group left open before it,
and only the owner of a group (the file where it starts) publishes it, with the total. So each
file's published rows follow from its own counts and a few numbers per rank, and an update
rewrites only the files whose rows or totals changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tol_dagster.derived.sorted_runs import mirror_order

#: A group's key: its lineage prefix (source, then ranks), NULL as None.
Key = tuple[str | None, ...]


@dataclass(frozen=True)
class FileGroups:
    """One file's groups at each level (coarse to fine, level d keyed by the first d + 2
    lineage columns): how many, the images of the first and of the last, and the full lineage
    of its first and last rows (each level's first and last keys are their prefixes)."""

    groups: Sequence[int]
    first_images: Sequence[int]
    last_images: Sequence[int]
    first: Key
    last: Key


@dataclass(frozen=True)
class Joined:
    """What a file publishes at each level: whether its first group belongs to an earlier
    file (`merged`), and the total of its last group when it owns it (`total`, else None)."""

    merged: tuple[bool, ...]
    total: tuple[int | None, ...]


def join(files: Sequence[FileGroups]) -> list[Joined] | None:
    """How each file's groups join its neighbours'; None when the files are not in lineage
    order (a group could then sit in files apart, and only a sort finds it)."""
    levels = len(files[0].groups) if files else 0
    merged = [[False] * levels for _ in files]
    totals: list[list[int | None]] = [[None] * levels for _ in files]
    open_groups: list[tuple[int, Key, int] | None] = [None] * levels  # (owner, key, total)
    previous: Key | None = None
    for i, file in enumerate(files):
        if not any(file.groups):
            continue
        if previous is not None and mirror_order(previous) > mirror_order(file.first):
            return None
        previous = file.last
        for level in range(levels):
            width = level + 2
            first, last = file.first[:width], file.last[:width]
            before = open_groups[level]
            if before is not None and before[1] == first:
                merged[i][level] = True
                before = (before[0], before[1], before[2] + file.first_images[level])
                if file.groups[level] == 1:
                    open_groups[level] = before
                    continue
            if before is not None:
                totals[before[0]][level] = before[2]
            open_groups[level] = (i, last, file.last_images[level])
    for level, group in enumerate(open_groups):
        if group is not None:
            totals[group[0]][level] = group[2]
    return [Joined(tuple(m), tuple(t)) for m, t in zip(merged, totals, strict=True)]

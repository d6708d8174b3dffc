"""What a rank pass keeps of each slice it published: its name, rows, bytes, sha256, seconds and
the checks it passed, in columns (`BuiltSlices`), handed out one `Built` at a time.

Why: each worker keeps its part's results until its part is done and the pass keeps them all
(for the run's metadata); a tuple of Python objects a slice cost ~350 bytes, 868,000 species
~0.3 GB in the pass and again in its workers, where columns cost ~150 (the name, mostly).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from tol_dagster.slices.extract import SliceResult


class Built(NamedTuple):
    """A slice a pass published: not its `SliceResult`, whose checks' words and details are
    ~3 kB."""

    key: str
    rows: int
    bytes: int
    sha256: str
    seconds: float
    #: The checks it passed, by name (none when the pass is unchecked).
    checks: tuple[str, ...]

    @classmethod
    def of(cls, result: SliceResult) -> Built:
        checks = tuple(c.check for c in result.checks)
        return cls(result.key, result.rows, result.bytes, result.sha256, result.seconds, checks)


class BuiltSlices:
    """Published slices in the order added, as columns (see the module's docstring)."""

    def __init__(self, built: Iterable[Built] = ()) -> None:
        self.keys: list[str] = []
        self.rows, self.bytes = array("q"), array("q")
        self.seconds = array("d")
        self.digests = bytearray()  # 32 bytes a slice
        self.checks: list[tuple[str, ...]] = []  # one tuple shared by every slice with those
        for one in built:
            self.append(one)

    def append(self, built: Built) -> None:
        self.keys.append(built.key)
        self.rows.append(built.rows)
        self.bytes.append(built.bytes)
        self.seconds.append(built.seconds)
        self.digests += bytes.fromhex(built.sha256)
        last = self.checks[-1] if self.checks else None  # slices in a row pass the same checks
        self.checks.append(last if last == built.checks else built.checks)

    def extend(self, other: BuiltSlices) -> None:
        self.keys += other.keys
        self.rows += other.rows
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.digests += other.digests
        self.checks += other.checks

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Built:
        i = range(len(self))[i]  # a negative index counts from the end; IndexError past it
        sha256 = self.digests[32 * i : 32 * i + 32].hex()
        return Built(
            self.keys[i], self.rows[i], self.bytes[i], sha256, self.seconds[i], self.checks[i]
        )

    def __iter__(self) -> Iterator[Built]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuiltSlices) and list(self) == list(other)

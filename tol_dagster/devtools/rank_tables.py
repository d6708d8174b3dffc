"""A taxon index and lineage summary as large as the real config's, without a mirror: what a
rank's plan reads, generated in seconds for any number of species (`tests/test_plan_memory.py`
and `bench/rank_plan.py` measure what a plan holds per value with them).

Each species has ROWS rows, in mirror order; the ranks above nest by FAN_OUT; row groups of
GROUP rows, GROUPS of them a file. Species are binomials of one-word genera and epithets, so the
index counts every key exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.derived.rank_counts import LINEAGE_SCHEMA
from tol_dagster.derived.taxon_index import INDEX_SCHEMA
from tol_dagster.schema import RANKS
from tol_dagster.slices.checks import (
    ROWS_MATCH_INDEX_COUNT,
    ROWS_SATISFY_KEY,
    SCHEMA_MATCHES_MIRROR,
    UUIDS_UNIQUE,
)
from tol_dagster.slices.emb_check import EMB_MATCHES_MIRROR
from tol_dagster.slices.rank_pass import Target
from tol_dagster.slices.rank_plan import RankValue
from tol_dagster.slices.rank_results import Built, BuiltSlices
from tol_dagster.store.mirror_files import MirrorFile

#: A plan of `species` in a child process (after a small plan: the kernels' and DuckDB's own
#: memory is not the values'), measured from /proc (Linux).
_MEASURE = """
import json, sys, time
from pathlib import Path
from tol_dagster.devtools.rank_tables import read_rank_tables
from tol_dagster.slices.rank_plan import plan_rank

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) << 10

plan_rank("species", *read_rank_tables(Path(sys.argv[1])))
tables = read_rank_tables(Path(sys.argv[2]))
Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
before, cpu, wall = status("VmRSS:"), time.process_time(), time.perf_counter()
plan = plan_rank("species", *tables)
print(json.dumps({
    "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
    "peak": status("VmHWM:") - before, "held": status("VmRSS:") - before,
    "values": len(plan.values),
}))
"""
#: The names of the checks a slice passes (what a pass's result keeps of them).
SLICE_CHECKS = (
    ROWS_MATCH_INDEX_COUNT, ROWS_SATISFY_KEY, UUIDS_UNIQUE, SCHEMA_MATCHES_MIRROR,
    EMB_MATCHES_MIRROR,
)  # fmt: skip
#: Rows of each generated species, rows of a row group, row groups of a file.
ROWS, GROUP, GROUPS = 30, 50_000, 20
#: Each rank's values hold this many of the rank below's (species per genus, ...).
FAN_OUT = {"genus": 8, "family": 10, "order": 10, "class": 5, "phylum": 5, "kingdom": 5}


def write_rank_tables(folder: Path, species: int) -> None:
    """`index.parquet` and `lineage.parquet` of `species` species into `folder` (made)."""
    folder.mkdir(parents=True)
    ids = {"species": np.arange(species)}
    for rank in reversed(RANKS[:-1]):
        ids[rank] = ids[RANKS[RANKS.index(rank) + 1]] // FAN_OUT[rank]
    names = {r: np.char.add(f"{r}-", ids[r].astype(str)) for r in RANKS[:-1]}
    epithets = np.char.add("e", ids["species"].astype(str))
    lineage = pa.table(
        {
            "source_dataset": pa.repeat("gbif", species),
            **{r: names[r] for r in RANKS[:-1]},
            "species": epithets,
            "images": np.full(species, ROWS, dtype=np.int64),
        }
    )
    binomials = np.char.add(np.char.add(names["genus"], " "), epithets)
    entries = [_entries(r, ids[r], names.get(r, binomials)) for r in RANKS]
    pq.write_table(pa.concat_tables(entries), folder / "index.parquet")
    pq.write_table(lineage.cast(LINEAGE_SCHEMA), folder / "lineage.parquet")


def read_rank_tables(folder: Path) -> tuple[pa.Table, pa.Table, list[MirrorFile]]:
    """The index, the lineage and the mirror files they name (names only: nothing is read)."""
    index, lineage = (pq.read_table(folder / f"{t}.parquet") for t in ("index", "lineage"))
    names = sorted(set(index["file"].to_pylist()))
    return index, lineage, [MirrorFile(n, "0" * 64, folder / n) for n in names]


def _entries(rank: str, ids: np.ndarray, names: np.ndarray) -> pa.Table:
    """The index entries of `rank`: each value's rows cut at the row groups."""
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    first, end = starts * ROWS, np.r_[starts[1:], len(ids)] * ROWS
    groups = [np.arange(f // GROUP, (e - 1) // GROUP + 1) for f, e in zip(first, end, strict=True)]
    group = np.concatenate(groups)
    value = np.repeat(np.arange(len(starts)), [len(g) for g in groups])
    row_start = np.maximum(group * GROUP, first[value])
    row_end = np.minimum((group + 1) * GROUP, end[value])
    in_file = group % GROUPS
    offset = (group - in_file) * GROUP  # the file's first row
    return pa.table(
        {
            "rank": pa.repeat(rank, len(group)),
            "value": names[starts][value],
            "file": np.char.add("train-", (group // GROUPS).astype(str)),
            "row_group": in_file.astype(np.int32),
            "row_start": row_start - offset,
            "row_end": row_end - offset,
            "rows": row_end - row_start,
        }
    ).cast(INDEX_SCHEMA)


def measure_plan(small: Path, folder: Path) -> dict[str, float]:
    """Plan `species` over the tables in `folder` in a fresh Python (after those in `small`):
    its CPU and wall seconds, peak and held RSS above the process's before (bytes), values.
    Run in `folder`, so that `PYTHONPATH` (another worktree) decides what is measured."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(small), str(folder)],
        capture_output=True, text=True, check=True, cwd=folder,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def results_only(
    chunks: Iterable[list[RankValue]], target: Target
) -> tuple[BuiltSlices, list[str]]:
    """A rank pass's worker that publishes nothing: each value's result as a real one would be
    (its key, rows, a sha256, every check's name), so that a pass over generated tables measures
    what the pass holds per value (its plan, chunks and results), not the slices' work."""
    built = BuiltSlices()
    for value in itertools.chain.from_iterable(chunks):
        name = value.key.name
        digest = hashlib.sha256(name.encode()).hexdigest()
        built.append(Built(name, value.rows, value.rows * 1_600, digest, 0.01, SLICE_CHECKS))
    return built, []

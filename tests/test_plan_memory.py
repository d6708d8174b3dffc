"""A rank's plan costs about a kilobyte a value at its peak, not a table of its own per value,
and holds under 300 bytes a value while the pass runs (its values as columns, the memory of
its DuckDB query given back).

A value's own slice of the taxon index cost ~3.4 kB of Arrow objects, and its spans and record
rows as Python lists more: ~5 kB a value, several GB for the real config's ~868,000 species
before the first slice. Measured as the peak RSS of planning `species` over a fresh process's
(after planning a small rank once: the kernels' and DuckDB's own memory is not the values'),
for two sizes of generated index and lineage: the slope is what each value costs. What it
still holds after (RSS) is what the pass keeps while its workers publish: a `RankValue` and its
key per value held ~800 bytes a value, and counting the species in the process's shared DuckDB
database ~400 (its allocator keeps what the query freed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tol_dagster import duck
from tol_dagster.devtools.rank_tables import measure_plan, write_rank_tables

#: Bytes a value a plan may cost at its peak (~1,200 measured; ~5,000 with a table a value).
MAX_BYTES_PER_VALUE = 2_500
#: Bytes a value a plan may hold once made (80-180 measured; ~400 with the shared database's
#: query, ~800 with a `RankValue` a value as well).
MAX_HELD_PER_VALUE = 300


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="reads peak RSS from /proc (Linux)"
)
def test_a_plan_peaks_near_a_kilobyte_a_value_and_holds_its_values_as_columns(
    tmp_path: Path,
) -> None:
    write_rank_tables(tmp_path / "small", 1_000)
    sizes = (40_000, 200_000)
    for n in sizes:
        write_rank_tables(tmp_path / str(n), n)
    measured = [measure_plan(tmp_path / "small", tmp_path / str(n)) for n in sizes]
    assert [m["values"] for m in measured] == list(sizes)
    per_value = (measured[1]["peak"] - measured[0]["peak"]) / (sizes[1] - sizes[0])
    assert per_value < MAX_BYTES_PER_VALUE, f"{per_value:.0f} bytes a value ({measured})"
    held = (measured[1]["held"] - measured[0]["held"]) / (sizes[1] - sizes[0])
    assert held < MAX_HELD_PER_VALUE, f"{held:.0f} bytes a value held ({measured})"


#: Planning 200,000 species, dropping its inputs, then what the pass gives back when it starts.
_GIVEN_BACK = """
import gc, sys
from pathlib import Path
from tol_dagster.devtools.rank_tables import read_rank_tables
from tol_dagster.slices import rank_pass
from tol_dagster.slices.rank_plan import plan_rank

def rss():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))

plan = plan_rank("species", *read_rank_tables(Path(sys.argv[1])))
gc.collect()
before = rss()
rank_pass._release_freed()
print(before - rss())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_a_pass_gives_back_what_planning_freed_before_its_workers_run(tmp_path: Path) -> None:
    """Arrow's pool keeps the pages of the index and lineage read, glibc's heap the plan's
    freed objects: the pass's process would hold them for hours (76 MB measured at 200,000
    species, ~300 MB at 868,000)."""
    write_rank_tables(tmp_path / "tables", 200_000)
    done = subprocess.run(
        [sys.executable, "-c", _GIVEN_BACK, str(tmp_path / "tables")], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    given_back = int(done.stdout.strip().splitlines()[-1])
    assert given_back > 30 << 20, f"{given_back >> 20} MB given back"


def test_a_database_of_its_own_is_closed_after() -> None:
    with duck.own_database() as con:
        assert con.sql("SELECT 42").fetchall() == [(42,)]
    with pytest.raises(duckdb.ConnectionException):
        con.sql("SELECT 1")
    with duck.cursor() as shared:
        assert shared.sql("SELECT 1").fetchall() == [(1,)], "the shared database stays open"

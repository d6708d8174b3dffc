"""The slice checks' memory per row: what they keep of every row of a slice (its uuid's hash
and whether it is NULL, ~9 bytes; `uuids_unique` sorts the hashes in place), never the uuid
strings. Measured as the peak RSS over a fresh process's, for two sizes of slice: the slope is
the memory each row costs, whatever the process's fixed costs. The strings the checks held
before were ~90 bytes a row: the real `kingdom=Animalia` (112M rows) needed ~10 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

#: Bytes a row the checks may keep at their peak (8-11 measured; 15-18 with a sorted copy of
#: the hashes, ~90 with the uuid strings).
MAX_BYTES_PER_ROW = 14

_MEASURE = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
from tol_dagster import duck
from tol_dagster.slices import checks
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.slices.slice_uuids import may_repeat

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024

path = Path(sys.argv[1])
duck.cursor().sql("SELECT 1").fetchall()  # the database's own memory is not the rows'
with pq.ParquetFile(path) as written:
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    before = status("VmRSS:")
    uuids, violations = checks._uuids_and_violations(path, parse_slice_key("kingdom=Animalia"), written)
    repeats = may_repeat(uuids)
    print(json.dumps({"peak": status("VmHWM:") - before, "violations": violations, "repeats": repeats}))
"""


def _slice_like(path: Path, rows: int) -> Path:
    """A file with a slice's uuids (36 characters, distinct) and its key column."""
    hexed = os.urandom(rows * 18).hex().encode()
    uuids = pa.array(np.frombuffer(hexed, dtype="S36")).cast(pa.string())
    table = pa.table({"uuid": uuids, "kingdom": pa.repeat("Animalia", rows)})
    pq.write_table(table, path, row_group_size=50_000)
    return path


def _peak(path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["violations"] == 0 and measured["repeats"] is False
    return int(measured["peak"])


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="reads peak RSS from /proc (Linux)"
)
def test_the_checks_keep_a_few_bytes_a_row_never_the_uuid_strings(tmp_path: Path) -> None:
    small, large = 1_000_000, 5_000_000
    peaks = [_peak(_slice_like(tmp_path / f"{rows}.parquet", rows)) for rows in (small, large)]
    per_row = (peaks[1] - peaks[0]) / (large - small)
    assert per_row < MAX_BYTES_PER_ROW, f"{per_row:.1f} bytes a row (peaks {peaks})"

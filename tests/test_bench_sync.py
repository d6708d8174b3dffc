"""`bench/sync.py` still runs end to end and prints every figure (not its targets: timing is noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "sync.py"

#: The start of each figure's row in the bench's table.
FIGURES = (
    "Hub requests, in-sync sensor tick",
    "Hub requests, no-op `tol-dagster sync`",
    "bytes fetched / bytes of changed files",
    "download+verify / plain GET throughput",
    "gate throughput",
    "emb checks (digests + norm bounds), CPU s per GB",
    "gate time / download time per file",
    "peak RSS of `tol-dagster sync`",
)


@pytest.mark.e2e
def test_bench_sync_prints_every_figure_with_a_value(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--rows", "4000", "--files", "2", "--repeats", "1", "--workdir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    for figure in FIGURES:
        row = next((r for r in rows if r.startswith(figure)), None)
        assert row is not None, f"{figure!r} missing from the table:\n{done.stdout}"
        value = row[len(figure) :]
        assert re.search(r"\d", value), f"{figure!r} has no value: {row!r}"

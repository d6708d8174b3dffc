"""`bench/adopt.py` still runs end to end and prints every figure (not its targets: timing is noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requirements

BENCH = Path(__file__).resolve().parents[1] / "bench" / "adopt.py"

#: The start of each figure's row in the bench's table.
FIGURES = (
    "adopt / sha256sum hashing, MB per CPU-second",
    "adopt / sha256sum hashing, wall MB/s",
    "adopt / sync wall time, local Hub uncapped",
    "adopt / sync wall time, Hub at",
    "bytes adopt fetched from the Hub",
)


@pytest.mark.e2e
def test_bench_adopt_prints_every_figure_with_a_value(tmp_path: Path) -> None:
    requirements.require_tool("sha256sum", "it comes with coreutils (apt-get install coreutils)")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--rows", "2000", "--files", "2", "--repeats", "1", "--workdir", str(tmp_path)),
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
        assert re.search(r"\d", row[len(figure) :]), f"{figure!r} has no value: {row!r}"

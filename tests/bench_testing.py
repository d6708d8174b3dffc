"""What the benchmarks' smoke tests share: run a bench small, check that it prints every figure
with a value (not its targets: timing is noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def assert_prints_every_figure(script: str, args: Sequence[str], figures: Sequence[str]) -> None:
    """`bench/<script> ARGS` exits 0 and its table has a row starting with each of `figures`,
    each with a number in it."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    for figure in figures:
        row = next((r for r in rows if r.startswith(figure)), None)
        assert row is not None, f"{figure!r} missing from the table:\n{done.stdout}"
        assert re.search(r"\d", row[len(figure) :]), f"{figure!r} has no value: {row!r}"

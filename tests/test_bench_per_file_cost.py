"""`bench/per_file_cost.py` still runs end to end and prints every figure (not its targets:
timing is noisy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_testing import assert_prints_every_figure

FIGURES = (
    "CPU per file, first sync of 3 files",
    "CPU per file, first sync of 8 files",
    "CPU per added file (slope 3 -> 8 files)",
)


@pytest.mark.e2e
def test_bench_per_file_cost_prints_every_figure_with_a_value(tmp_path: Path) -> None:
    assert_prints_every_figure(
        "per_file_cost.py", ("--files", "3", "8", "--workdir", str(tmp_path)), FIGURES
    )

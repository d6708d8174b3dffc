"""`bench/adopt.py` still runs end to end and prints every figure (not its targets: timing is noisy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requirements
from bench_testing import assert_prints_every_figure

#: The start of each figure's row in the bench's table.
FIGURES = (
    "adopt / sha256sum hashing, MB per CPU-second",
    "adopt / sha256sum hashing, wall MB/s",
    "adopt / download, files brought in verified, local Hub uncapped",
    "adopt / download, files brought in verified, Hub at",
    "`tol-dagster adopt` / `sync` wall time",
    "bytes adopt fetched from the Hub",
)


@pytest.mark.e2e
def test_bench_adopt_prints_every_figure_with_a_value(tmp_path: Path) -> None:
    requirements.require_tool("sha256sum", "it comes with coreutils (apt-get install coreutils)")
    assert_prints_every_figure(
        "adopt.py",
        ("--rows", "2000", "--files", "2", "--repeats", "1", "--workdir", str(tmp_path)),
        FIGURES,
    )

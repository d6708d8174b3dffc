"""`bench/sync.py` still runs end to end and prints every figure (not its targets: timing is noisy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_testing import assert_prints_every_figure

#: The start of each figure's row in the bench's table.
FIGURES = (
    "Hub requests, in-sync sensor tick",
    "Hub requests, no-op `tol-dagster sync`",
    "bytes fetched / bytes of changed files",
    "download+verify / plain GET throughput",
    "download CPU s per GB",
    "gate throughput",
    "gate, MB of parquet per CPU second",
    "emb checks (digests + norm bounds), CPU s per GB",
    "gate time / download time per file",
    "peak RSS of `tol-dagster sync`",
)


@pytest.mark.e2e
def test_bench_sync_prints_every_figure_with_a_value(tmp_path: Path) -> None:
    assert_prints_every_figure(
        "sync.py",
        ("--rows", "4000", "--files", "2", "--repeats", "1", "--workdir", str(tmp_path)),
        FIGURES,
    )

"""`bench/gate.py` still runs and prints its figure (not its target: timing is noisy)."""

from __future__ import annotations

from pathlib import Path

from bench_testing import assert_prints_every_figure

from tol_dagster.schema import DEFAULT_CONFIG


def test_bench_gate_prints_its_figure_with_a_value(small_sample: Path) -> None:
    files = [str(p) for p in sorted((small_sample / DEFAULT_CONFIG).glob("*.parquet"))]
    assert_prints_every_figure("gate.py", files, ["gate, MB of parquet per CPU second"])

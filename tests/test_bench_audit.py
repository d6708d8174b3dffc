"""`bench/audit.py` still runs and prints its figures (not a target: timing is noisy)."""

from __future__ import annotations

from bench_testing import assert_prints_every_figure


def test_bench_audit_prints_its_figures_with_values() -> None:
    assert_prints_every_figure(
        "audit.py",
        ["--slices", "200", "--size", "2000", "--runs", "1"],
        ["audit re-hashing / plain sha256 loop", "audit sizing, us a slice", "peak RSS, MB"],
    )

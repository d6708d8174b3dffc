"""The published slices' audit (`slices_match_catalog`) beside a plain sha256 of the same files.

`--slices` files of `--size` random bytes and their catalog are written into a temporary
folder (`--workdir DIR` keeps them for the next run), then `--runs` rounds, alternated, of:
a loop of `sha256_file` over the files (the floor of re-hashing them), the audit re-hashing
(`audit_slices(rehash=True)`, what `audit_job` and `tol-dagster audit` run) and the audit
sizing (`rehash=False`, what follows each catalog write in Dagster). Medians of CPU seconds.

    .venv/bin/python bench/audit.py                               # 20,000 slices of 20 kB
    .venv/bin/python bench/audit.py --slices 2000 --size 1000000  # larger slices

What the audit adds to the hashing is per slice (a catalog row, two stats): the ratio is
largest for small slices, such as a rank of species.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.slices.audit import audit_slices
from tol_dagster.slices.catalog_file import CATALOG_SCHEMA, upsert_rows
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout


def publish(layout: Layout, count: int, size: int) -> list[Path]:
    """`count` slice files of `size` random bytes and the catalog listing them (kept if there)."""
    folder = layout.slices_dir(DEFAULT_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    layout.state_dir(DEFAULT_CONFIG).mkdir(parents=True, exist_ok=True)
    paths = [folder / f"species=S{i}.parquet" for i in range(count)]
    if layout.catalog_path(DEFAULT_CONFIG).is_file() and all(
        p.is_file() and p.stat().st_size == size for p in paths
    ):
        return paths
    for path in paths:
        path.write_bytes(os.urandom(size))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    now = datetime.now(UTC)
    rows = {
        "config": [DEFAULT_CONFIG] * count,
        "name": [p.stem for p in paths],
        "rank": ["species"] * count,
        "value": [p.stem.removeprefix("species=") for p in paths],
        "path": [str(p) for p in paths],
        "rows": [1] * count,
        "bytes": [size] * count,
        "sha256": digests,
        "upstream_commit": ["bench"] * count,
        "built_at": [now] * count,
    }
    upsert_rows(layout, DEFAULT_CONFIG, pa.table(rows, schema=CATALOG_SCHEMA))
    return paths


def cpu_of(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def audited(layout: Layout, *, rehash: bool) -> Callable[[], object]:
    def run() -> None:
        result = audit_slices(layout, DEFAULT_CONFIG, rehash=rehash)
        assert result.passed, result.message

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=20_000, help="bytes a slice")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the slices here for the next run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tol-bench-audit-") as tmp:
        layout = Layout(args.workdir or Path(tmp))
        paths = publish(layout, args.slices, args.size)
        ways = {
            "plain sha256 loop": lambda: [sha256_file(p) for p in paths],
            "audit re-hashing": audited(layout, rehash=True),
            "audit sizing": audited(layout, rehash=False),
        }
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.runs):
            for way, work in ways.items():
                times[way].append(cpu_of(work))
    cpu = {way: statistics.median(found) for way, found in times.items()}
    per_slice = {way: seconds / args.slices * 1e6 for way, seconds in cpu.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.slices:,} slices of {args.size:,} bytes, medians of {args.runs} rounds (CPU)")
    for way, seconds in cpu.items():
        print(f"{way:<46} {seconds:8.3f} s  {per_slice[way]:8.1f} us a slice")
    ratio = cpu["audit re-hashing"] / cpu["plain sha256 loop"]
    print(f"{'audit re-hashing / plain sha256 loop':<46} {ratio:8.2f}")
    print(f"{'audit sizing, us a slice':<46} {per_slice['audit sizing']:8.1f}")
    print(f"{'peak RSS, MB':<46} {peak:8.0f}")


if __name__ == "__main__":
    main()

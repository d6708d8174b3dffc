"""The blocking checks of one large slice over many mirror files: their CPU per row group and
their memory per row, the two that grow with a slice (the real `kingdom=Animalia` is 112M rows
in 2,240 row groups over ~330 files).

A generated mirror of many small files (`--files`, `--rows`; `emb` of `--dim` values, so that
the sample is small), its largest kingdom extracted once; then `slice_checks` in fresh child
processes, `--runs` times, as the slices asset runs them before publishing. Printed: the
checks' CPU and wall time, CPU per slice row group, peak RSS above the process's before the
checks, and that per row. Run it on other code with `PYTHONPATH=<a worktree>` to compare.

    .venv/bin/python bench/slice_checks.py --workdir /tmp/slc      # 2M rows in 200 files
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from tol_dagster.derived.taxon_index import build_taxon_index, read_taxon_index
from tol_dagster.devtools.sample import build_sample
from tol_dagster.schema import DEFAULT_CONFIG, arrow_schema
from tol_dagster.slices.checks import slice_checks
from tol_dagster.slices.counts import expected_count
from tol_dagster.slices.extract import extract_slice
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

SEED = 11


def mirror_files(sample: Path) -> list[MirrorFile]:
    folder = sample / DEFAULT_CONFIG
    return [MirrorFile(p.name, sha256_file(p), p) for p in sorted(folder.glob("*.parquet"))]


def prepare(workdir: Path, rows: int, files: int, dim: int, row_group_size: int) -> SliceKey:
    """The sample, its taxon index and its largest kingdom's slice (kept for the next run)."""
    size = workdir / f".size-{rows}-{files}-{dim}-{row_group_size}"
    if not size.exists():
        build_sample(
            workdir / "sample", rows=rows, files=files, seed=SEED, dim=dim,
            row_group_size=row_group_size,
        )  # fmt: skip
        size.touch()
    mirror, layout = mirror_files(workdir / "sample"), Layout(workdir / "home")
    build_taxon_index(mirror, layout, DEFAULT_CONFIG)
    index = read_taxon_index(layout, DEFAULT_CONFIG)
    kingdoms = index.filter(index["rank"].to_numpy(zero_copy_only=False) == "kingdom")
    totals: dict[str, int] = {}
    for value, count in zip(
        kingdoms["value"].to_pylist(), kingdoms["rows"].to_pylist(), strict=True
    ):
        totals[value] = totals.get(value, 0) + count
    key = parse_slice_key(f"kingdom={max(sorted(totals), key=totals.__getitem__)}")
    out = workdir / "slice.parquet"
    if not out.exists():
        extract_slice(key, mirror, index, out, schema=arrow_schema(dim))
    return key


def measure(workdir: Path, key: SliceKey) -> dict[str, float]:
    """Run the checks once in this process (a fresh child) and measure them."""
    mirror, layout = mirror_files(workdir / "sample"), Layout(workdir / "home")
    index = read_taxon_index(layout, DEFAULT_CONFIG)
    out = workdir / "slice.parquet"
    dim = pq.read_schema(mirror[0].path).field("emb").type.list_size
    schema, rows = arrow_schema(dim), expected_count(key, index, mirror)
    slice_checks(out, key, rows, schema, mirror, index, layout=layout, config=DEFAULT_CONFIG)
    # once to keep what the gate keeps per file (digests, chunk crcs): not the checks' work
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    before = _status("VmRSS:")
    cpu, wall = time.process_time(), time.perf_counter()
    results = slice_checks(
        out, key, rows, schema, mirror, index, layout=layout, config=DEFAULT_CONFIG
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    failed = [r.check for r in results if not r.passed]
    assert not failed, f"checks failed: {failed}"
    return {
        "rows": rows,
        "row_groups": pq.read_metadata(out).num_row_groups,
        "cpu": cpu,
        "wall": wall,
        "peak": _status("VmHWM:") - before,
    }


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--row-group-size", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the sample here and reuse it")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.workdir, parse_slice_key(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="tol-bench-checks-") as tmp:
        workdir = args.workdir or Path(tmp)
        key = prepare(workdir, args.rows, args.files, args.dim, args.row_group_size)
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--workdir", str(workdir), "--child", key.name],
                    check=True, capture_output=True, text=True,
                ).stdout.splitlines()[-1]
            )
            for _ in range(args.runs)
        ]  # fmt: skip
    med = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    rows, groups = int(med["rows"]), int(med["row_groups"])
    print(f"{key.name}: {rows:,} rows in {groups:,} row groups over {args.files} files")
    print(
        f"  checks: {med['cpu']:.2f} CPU s ({med['cpu'] / groups * 1e3:.2f} ms a row group), "
        f"{med['wall']:.2f} s wall; peak RSS +{med['peak'] / 2**20:.0f} MB "
        f"({med['peak'] / rows:.1f} bytes a row); medians of {args.runs} runs"
    )


if __name__ == "__main__":
    main()

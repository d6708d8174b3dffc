"""What planning a whole rank costs at the real config's scale: `plan_rank("species")` over a
generated taxon index and lineage summary of `--species` values (868,000 by default, about the
real config's species), in fresh child processes, `--runs` times. Printed: CPU and wall time,
peak RSS above the process's before the plan (after a small plan: the kernels' and DuckDB's own
memory is not the values'), what it still holds after, and both per value. A rank pass holds
its plan in the parent process while the workers publish (target of the pass: < 2 GB in all).
Then a pass over that plan whose two workers publish nothing (`rank_tables.results_only`: each
value's result as a real one, no slice), which measures what the pass holds per value: the
parent's peak during the pass and each worker's, and its wall time (what a pass spends on its
values besides their slices: finding their records, sending them, taking their results). A
real pass adds each worker's working set of one slice at a time (`bench/slices.py`'s rank runs
print it).
Run it on other code with `PYTHONPATH=<a worktree>` to compare (a commit before
`tol_dagster/devtools/rank_tables.py` needs that file copied into its worktree).

    .venv/bin/python bench/rank_plan.py --workdir /tmp/rp
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

import pyarrow as pa
from slices import WorkerPeaks, peak_rss_mb

from tol_dagster.devtools.rank_tables import (
    measure_plan,
    read_rank_tables,
    results_only,
    write_rank_tables,
)
from tol_dagster.slices import rank_pass
from tol_dagster.slices.rank_plan import plan_rank
from tol_dagster.store.layout import Layout


def tables(workdir: Path, species: int) -> Path:
    """The generated tables of `species` values (kept for the next run)."""
    folder = workdir / f"species-{species}"
    if not (folder / "lineage.parquet").exists():
        write_rank_tables(folder, species)
    return folder


def pass_child(folder: Path) -> None:
    """In a fresh process: the plan of `folder`'s species, then a pass over it of two workers
    that publish nothing; prints the values, the parent's peak during the pass and each
    worker's (MB), and the pass's seconds."""
    index, lineage, files = read_rank_tables(folder)
    plan = plan_rank("species", index, lineage, files)
    del index, lineage
    rank_pass._release_freed()  # as the pass starts by doing: what planning freed is not its
    Path("/proc/self/clear_refs").write_text("5")  # the parent's peak from here on
    rank_pass.publish_values = results_only
    workers = WorkerPeaks()
    workers.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        rank_pass.publish_rank(
            plan, files, schema=pa.schema([]), layout=Layout(Path(home)), config="bench",
            commit="bench", generation="bench", workers=2,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    workers.total_mb()
    print(json.dumps([len(plan.values), peak_rss_mb(), sorted(workers.peaks.values()), seconds]))


def measure_pass(folder: Path) -> tuple[int, float, list[float], float]:
    """`pass_child` in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--pass-child", str(folder)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    values, parent, workers, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return values, parent, workers, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--species", type=int, default=868_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pass-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pass_child:
        pass_child(args.pass_child)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rank-plan-"))
    small, folder = tables(workdir, 1_000), tables(workdir, args.species)
    runs = [measure_plan(small, folder) for _ in range(args.runs)]
    values = int(runs[0]["values"])
    mb = 1 << 20
    for name in ("cpu", "wall", "peak", "held"):
        each = [r[name] for r in runs]
        middle = statistics.median(each)
        if name in ("cpu", "wall"):
            print(f"{name:5} {middle:7.2f} s   ({', '.join(f'{x:.2f}' for x in each)})")
        else:
            print(
                f"{name:5} {middle / mb:7.0f} MB  ({', '.join(f'{x / mb:.0f}' for x in each)}), "
                f"{middle / values:,.0f} bytes a value"
            )
    print(f"species planned: {values:,}")
    values, parent, workers, seconds = measure_pass(folder)
    print(
        f"a pass over them, its 2 workers publishing nothing, in {seconds:.1f} s (wall): "
        f"the parent's peak {parent:.0f} MB, "
        f"the workers' {' and '.join(f'{w:.0f}' for w in workers)} MB: "
        f"{parent + sum(workers):,.0f} MB together ({values:,} values)"
    )


if __name__ == "__main__":
    main()

"""What planning a whole rank costs at the real config's scale: `plan_rank("species")` over a
generated taxon index and lineage summary of `--species` values (868,000 by default, about the
real config's species), in fresh child processes, `--runs` times. Printed: CPU and wall time,
peak RSS above the process's before the plan (after a small plan: the kernels' and DuckDB's own
memory is not the values'), what it still holds after, and both per value. A rank pass holds
its plan in the parent process while the workers publish (target of the pass: < 2 GB in all).
Run it on other code with `PYTHONPATH=<a worktree>` to compare (a commit before
`tol_dagster/devtools/rank_tables.py` needs that file copied into its worktree).

    .venv/bin/python bench/rank_plan.py --workdir /tmp/rp
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tol_dagster.devtools.rank_tables import measure_plan, write_rank_tables


def tables(workdir: Path, species: int) -> Path:
    """The generated tables of `species` values (kept for the next run)."""
    folder = workdir / f"species-{species}"
    if not (folder / "lineage.parquet").exists():
        write_rank_tables(folder, species)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--species", type=int, default=868_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()

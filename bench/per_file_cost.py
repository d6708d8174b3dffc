"""Fixed CPU cost per file of a first sync (issue 10, item 8; issue 11, item 3).

For each N (default 60 and 666), a config of N small files (500 rows, ~0.73 MB each, like the
666-file run in PERF.md) is built with the sample generator, served by the local Hub in a
process of its own, and synced from an empty data home by a child process that runs
`tol-dagster sync`'s own code (`cli.sync_command.run_sync`: the resync job in process, through
the real huggingface_hub client). The child counts its CPU seconds around the sync only, after
the command's imports, its threads included; the Hub's CPU is not counted.

Printed beside their targets:

- CPU per file of the whole sync at each N (the sync's fixed start-up shared by N files);
- the slope (cpu(N2) - cpu(N1)) / (N2 - N1): what one more file costs, start-up removed.

    .venv/bin/python bench/per_file_cost.py                   # N = 60 and 666 (~4 minutes)
    .venv/bin/python bench/per_file_cost.py --files 10 40     # a smoke run

`--workdir DIR` keeps the samples there and reuses them. CPU time, not wall time, is what this
measures: the machine is shared, and the sync downloads from a Hub on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sync import Figure, HubProcess, command_env, ensure_sample, hub_env, run_and_print

from tol_dagster.cli import verbosity

#: Rows per file: the size of the 666-file run that measured ~130 ms per file.
ROWS_PER_FILE = 500
DEFAULT_FILES = (60, 666)
#: CPU seconds per file of a first sync at the largest N (issue 10, item 8).
TARGET_CPU_PER_FILE_S = 0.020


@dataclass(frozen=True)
class SyncCost:
    files: int
    megabytes: float
    cpu_s: float
    wall_s: float


def measure_sync_in_this_process() -> dict[str, float]:
    """Run `tol-dagster sync` as the command does, with the environment already set; its CPU
    and wall seconds, the command's imports excluded (Great Expectations, imported only when a
    file needs it, is counted when it is)."""
    from tol_dagster.cli.sync_command import run_sync

    wall, cpu = time.perf_counter(), time.process_time()
    code = run_sync(config=None, accept_row_loss=False, accept_schema_change=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if code != 0:
        raise SystemExit(f"tol-dagster sync exited {code}")
    return {"cpu_s": cpu, "wall_s": wall}


def first_sync_cost(work: Path, files: int) -> SyncCost:
    """A first sync of a generated config of `files` files, in a child process."""
    sample = work / f"sample-{files}"
    built = ensure_sample(sample, rows=files * ROWS_PER_FILE, files=files)
    if built is not None:
        print(f"built {files} files in {built:.0f} s", flush=True)
    hub_root, home = work / f"hub-{files}", work / f"home-{files}"
    for folder in (hub_root, home):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(sample, hub_root, copy_function=os.link)
    megabytes = sum(p.stat().st_size for p in hub_root.rglob("*.parquet")) / 1e6
    hub = HubProcess(hub_root, hub_env())
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--measure"],
            env=command_env(home, hub.endpoint),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        hub.stop()
        # Removed now, not before the next sync: on ext4 without a journal, creating a file
        # walks past every inode deleted in the last minute or more (`recently_deleted`), so
        # a sync that follows thousands of deletions pays the kernel for the bench's cleanup.
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"the sync of {files} files failed:\n{done.stdout}\n{done.stderr}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    cost = SyncCost(files, megabytes, measured["cpu_s"], measured["wall_s"])
    print(
        f"{files} files ({megabytes:,.1f} MB): first sync {cost.cpu_s:.1f} CPU s "
        f"({cost.cpu_s / files * 1e3:.1f} ms per file), {cost.wall_s:.1f} s wall",
        flush=True,
    )
    return cost


def bench(work: Path, sizes: list[int]) -> list[Figure]:
    costs = [first_sync_cost(work, files) for files in sorted(sizes)]
    small, large = costs[0], costs[-1]
    slope = (large.cpu_s - small.cpu_s) / max(1, large.files - small.files)
    figures = [
        Figure(
            f"CPU per file, first sync of {cost.files} files",
            f"{cost.cpu_s / cost.files * 1e3:.1f} ms ({cost.cpu_s:.1f} CPU s, "
            f"{cost.megabytes / cost.files:.2f} MB per file)",
            f"<= {TARGET_CPU_PER_FILE_S * 1e3:.0f} ms" if cost is large else "-",
            cost.cpu_s / cost.files <= TARGET_CPU_PER_FILE_S if cost is large else None,
        )
        for cost in costs
    ]
    figures.append(
        Figure(
            f"CPU per added file (slope {small.files} -> {large.files} files)",
            f"{slope * 1e3:.1f} ms (start-up {max(0.0, small.cpu_s - slope * small.files):.1f} CPU s)",
            f"<= {TARGET_CPU_PER_FILE_S * 1e3:.0f} ms",
            slope <= TARGET_CPU_PER_FILE_S,
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--files",
        type=int,
        nargs="+",
        default=list(DEFAULT_FILES),
        help=f"config sizes to sync, at least two (default {' '.join(map(str, DEFAULT_FILES))})",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the samples here and reuse them"
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # the child: the environment names the Hub and the data home
        verbosity.set_output(quiet=True, as_json=False)
        print(json.dumps(measure_sync_in_this_process()))
        return 0
    if len(set(args.files)) < 2 or min(args.files) < 1:
        parser.error("--files needs at least two different positive sizes")
    run_and_print(args.workdir, "tol-bench-per-file-", lambda work: bench(work, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

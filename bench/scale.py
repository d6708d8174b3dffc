"""Scale benchmark (issue 10, item 8): one config of many small files, three executors, one run.

A config of 666 small files (500 rows, ~0.73 MB each, like the run in PERF.md) is built with the
sample generator and served by the local Hub in a process of its own. For each executor, from
an empty data home, through the real huggingface_hub client:

- `tol-dagster sync` (the first sync: fetch, the gate, publish),
- `tol-dagster slice family=<the largest family>` (the derived tables, then the slice),

run as the commands a user types, `TOL_EXECUTOR` set to `in_process`, `multiprocess`
(`TOL_WORKERS=2`) and `celery` (two `tol-dagster worker --concurrency 1` started before and
stopped after, RabbitMQ on 127.0.0.1:5672, a queue of this run's own). Printed side by side:
wall time and its ratio to in process, CPU seconds of every process involved (the commands with
every process they started, reaped here if they outlive it, the workers with theirs; the Hub's
excluded), the peak RSS of
the largest process of each kind, and the fixed cost per file: what one more file adds to the
CPU seconds of an in-process first sync, from a second config a tenth the size (the command's
start-up cancels out; target <= 20 ms at 666 files; about 130 ms before issue 10).

    .venv/bin/python bench/scale.py                    # 666 files (~10 minutes on 2 cores)
    .venv/bin/python bench/scale.py --files 24         # a smoke run

`--workdir DIR` keeps the sample there and reuses it. Every data home is the same machine's
SQLite instance (`DAGSTER_HOME` under it): the workers start one after the other, as SCALE.md
advises. Wall times on 2 shared cores measure the neighbours too; the CPU columns do not.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from sync import Figure, HubProcess, command_env, ensure_sample, hub_env, run_and_print

ROWS_PER_FILE = 500
DEFAULT_FILES = 666
#: CPU seconds per file of an in-process first sync (issue 10, item 8).
TARGET_CPU_PER_FILE_S = 0.020
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
WORKERS = 2
#: How long a worker may take to say it is ready.
WORKER_START_S = 120
#: How long processes a command left behind may take to end after it.
ORPHAN_WAIT_S = 30
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Usage:
    """What one process (and the children it reaped) used, from wait4."""

    wall_s: float
    cpu_s: float
    max_rss_bytes: int

    @classmethod
    def of(cls, usage: resource.struct_rusage, wall_s: float) -> Usage:
        # ru_maxrss is in KiB on Linux.
        return cls(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


@dataclass
class ModeRun:
    """One executor's sync and slice, with its workers' usage."""

    mode: str
    sync: Usage
    slice: Usage
    workers: list[Usage] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return self.sync.wall_s + self.slice.wall_s

    @property
    def cpu_s(self) -> float:
        return self.sync.cpu_s + self.slice.cpu_s + sum(w.cpu_s for w in self.workers)


def become_subreaper() -> None:
    """Processes a command leaves behind (the multiprocess executor's forkserver, with the
    steps it forked) become this process's children when the command exits, so their CPU and
    RSS are counted by reaping them (prctl PR_SET_CHILD_SUBREAPER, Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children() -> set[int]:
    """The pids whose parent is this process, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces and parentheses: the fields follow the last ')'.
            if int(stat.read_text().rpartition(")")[2].split()[1]) == os.getpid():
                found.add(int(stat.parent.name))
    return found


def reap_left_behind(keep: set[int]) -> list[resource.struct_rusage]:
    """Wait for the processes a command left behind (children now, not in `keep`) to end."""
    used = []
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while (left := children() - keep) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                done, _, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    used.append(usage)
        time.sleep(0.05)
    return used


def run_command(args: list[str], env: dict[str, str], log: Path) -> Usage:
    """`tol-dagster ARGS` to completion; its usage with every process it started."""
    keep = children()
    started = time.perf_counter()
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tol_dagster.cli.main", *args, "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"tol-dagster {' '.join(args)} exited {code}; see {log}")
    used = [Usage.of(u, wall_s) for u in [usage, *reap_left_behind(keep)]]
    return Usage(wall_s, sum(u.cpu_s for u in used), max(u.max_rss_bytes for u in used))


class Workers:
    """`tol-dagster worker --concurrency 1` processes, started one after the other."""

    def __init__(self, env: dict[str, str], logs: Path, count: int) -> None:
        self.processes: list[tuple[subprocess.Popen[bytes], float]] = []
        for n in range(count):
            log = logs / f"worker-{n}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tol_dagster.cli.main", "worker", "--concurrency", "1"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            self.processes.append((process, time.perf_counter()))
            wait_ready(process, log)

    def stop(self) -> list[Usage]:
        """A warm shutdown of each (SIGTERM); their usage."""
        for process, _ in self.processes:
            process.send_signal(signal.SIGTERM)
        used = []
        for process, started in self.processes:
            _, _, usage = os.wait4(process.pid, 0)
            used.append(Usage.of(usage, time.perf_counter() - started))
        return used


def wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a worker exited {process.returncode}:\n{log.read_text()}")
        if " ready." in log.read_text():
            return
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"a worker did not become ready in {WORKER_START_S} s:\n{log.read_text()}")


def broker_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


def largest_family(mirror: Path) -> str:
    """The family with the most rows in the synced mirror: the slice every mode cuts."""
    rows = duckdb.execute(
        f"SELECT family FROM read_parquet('{mirror}/*.parquet') WHERE family IS NOT NULL "
        "GROUP BY family ORDER BY count(*) DESC, family LIMIT 1"
    ).fetchall()
    assert rows, "the sample has no family"
    return str(rows[0][0])


def run_mode(
    mode: str, work: Path, endpoint: str, family: str | None, extra: dict[str, str]
) -> tuple[ModeRun, str]:
    """Sync and slice from an empty data home with `TOL_EXECUTOR=mode`."""
    home = work / f"home-{mode}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = command_env(home, endpoint) | {"TOL_EXECUTOR": mode} | extra
    log = work / f"{mode}.log"
    log.write_text("")
    workers = Workers(env, work, WORKERS) if mode == "celery" else None
    try:
        synced = run_command(["sync"], env, log)
        family = family or largest_family(home / "mirror" / env["TOL_CONFIGS"])
        sliced = run_command(["slice", f"family={family}"], env, log)
    finally:
        used = workers.stop() if workers is not None else []
    run = ModeRun(mode, synced, sliced, used)
    print(
        f"{mode}: sync {synced.wall_s:.1f} s, derived + slice {sliced.wall_s:.1f} s, "
        f"{run.cpu_s:.1f} CPU s",
        flush=True,
    )
    return run, family


def sample_of(work: Path, files: int) -> Path:
    sample = work / f"sample-{files}"
    built = ensure_sample(sample, rows=files * ROWS_PER_FILE, files=files)
    if built is not None:
        print(f"built {files} files in {built:.0f} s", flush=True)
    return sample


def small_sync_cpu(work: Path, files: int) -> float:
    """CPU seconds of an in-process first sync of a config of `files` files."""
    hub = HubProcess(sample_of(work, files), hub_env())
    try:
        home = work / f"home-small-{files}"
        shutil.rmtree(home, ignore_errors=True)
        used = run_command(["sync"], command_env(home, hub.endpoint), work / "small.log")
    finally:
        hub.stop()
    print(f"in_process, {files} files: sync {used.wall_s:.1f} s, {used.cpu_s:.1f} CPU s")
    return used.cpu_s


def bench(work: Path, files: int) -> list[Figure]:
    become_subreaper()
    small = max(2, files // 10)
    small_cpu = small_sync_cpu(work, small)
    sample = sample_of(work, files)
    megabytes = sum(p.stat().st_size for p in sample.rglob("*.parquet")) / 1e6
    modes: list[tuple[str, dict[str, str]]] = [
        ("in_process", {}),
        ("multiprocess", {"TOL_WORKERS": str(WORKERS)}),
    ]
    if broker_reachable():
        queue = f"tol-bench-{os.getpid()}"
        modes.append(
            ("celery", {"TOL_CELERY_BROKER": BROKER, "TOL_CELERY_QUEUE": queue, "TOL_WORKERS": "1"})
        )
    else:
        print("RabbitMQ is not reachable on 127.0.0.1:5672: celery is left out", flush=True)
    hub = HubProcess(sample, hub_env())
    runs: list[ModeRun] = []
    family: str | None = None
    try:
        for mode, extra in modes:
            run, family = run_mode(mode, work, hub.endpoint, family, extra)
            runs.append(run)
    finally:
        hub.stop()
    rows = figures(runs, family or "?")
    slope = (runs[0].sync.cpu_s - small_cpu) / max(1, files - small)
    rows.append(
        Figure(
            f"fixed cost per file, in-process first sync ({small} -> {files} files)",
            f"{slope * 1e3:.1f} ms CPU per added file ({runs[0].sync.cpu_s:.1f} CPU s at "
            f"{files}, {megabytes / files:.2f} MB per file)",
            f"<= {TARGET_CPU_PER_FILE_S * 1e3:.0f} ms",
            slope <= TARGET_CPU_PER_FILE_S,
        )
    )
    return rows


def figures(runs: list[ModeRun], family: str) -> list[Figure]:
    base = runs[0]
    rows = [
        Figure(
            f"{run.mode}: sync + derived + slice family={family}",
            f"{run.wall_s:.1f} s wall ({run.wall_s / base.wall_s:.2f}x in process), "
            f"{run.cpu_s:.1f} CPU s ({run.cpu_s / base.cpu_s:.2f}x)",
            "-",
            None,
        )
        for run in runs
    ]
    for run in runs:
        largest = max(run.sync.max_rss_bytes, run.slice.max_rss_bytes)
        workers = (
            f", largest worker {max(w.max_rss_bytes for w in run.workers) / 1e6:,.0f} MB"
            if run.workers
            else ""
        )
        rows.append(
            Figure(
                f"{run.mode}: peak RSS per process",
                f"largest command (with its step processes) {largest / 1e6:,.0f} MB{workers}",
                "-",
                None,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--files", type=int, default=DEFAULT_FILES, help=f"files (default {DEFAULT_FILES})"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the sample here and reuse it"
    )
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error("--files must be positive")
    run_and_print(args.workdir, "tol-bench-scale-", lambda work: bench(work, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

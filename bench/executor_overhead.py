"""Executor overhead (issue 10, README "Running at scale"): what one process of the code
location costs, and what each step costs beyond its own work under each `TOL_EXECUTOR`.

- load: a fresh Python importing the code location and building its definitions, as the code
  server, the daemon, each Celery worker and each run do (CPU s, wall s, peak RSS), beside a
  bare `import dagster`; median of three.
- per step: two trivial jobs run by the executor `TOL_EXECUTOR=<mode>` gives
  (`defs.executors.chosen_executor`): `one` (1 no-op step) and `fan` (1 + N no-op steps); a
  step's extra cost is (fan - one) / N, in wall seconds and in CPU seconds of every process
  involved (the run's, its children and, for celery, the two workers'). Side by side, with
  ratios against in_process.

    .venv/bin/python bench/executor_overhead.py                       # N=8, about 2 minutes
    .venv/bin/python bench/executor_overhead.py --steps 2 --repeat 1  # a smoke run

Every mode uses a PostgreSQL database of its own as instance storage (127.0.0.1:5432, dropped
at the end) and Celery goes through RabbitMQ (127.0.0.1:5672, a queue of its own); when one is
not there the bench says which and measures what it can. Wall times on a shared machine
mostly measure the neighbours: compare the CPU rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from multiprocessing import forkserver
from pathlib import Path

import dagster as dg
import psycopg2

from tol_dagster.cluster_settings import ClusterSettings
from tol_dagster.defs.executors import chosen_executor
from tol_dagster.defs.instance import ensure_dagster_home
from tol_dagster.defs.resources import LITERALS
from tol_dagster.settings import Settings

MODES = ("in_process", "multiprocess", "celery")
WORKERS = 2
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
#: Read at import: the run's process, the multiprocess children and the workers build the same.
STEPS = int(os.environ.get("TOL_BENCH_STEPS", "8"))
EXECUTOR = chosen_executor(ClusterSettings.from_env(), LITERALS)
TOL_DAGSTER = str(Path(sys.executable).parent / "tol-dagster")
LOAD_CODE = "import tol_dagster.definitions as d; d.defs().get_repository_def().get_all_jobs()"


@dg.op
def noop() -> int:
    """No work: what a step costs here is the executor's own."""
    return 0


@dg.job(executor_def=EXECUTOR)
def one() -> None:
    noop()


@dg.job(executor_def=EXECUTOR)
def fan() -> None:
    for index in range(STEPS + 1):
        noop.alias(f"noop_{index}")()


def run_here(name: str) -> dict[str, float]:
    """Run job `name` in this process against the instance of the environment; its costs."""
    ensure_dagster_home(Settings.from_env())
    job = {"one": one, "fan": fan}[name]
    before = cpu_seconds()
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(job), instance=instance)
        assert result.success, f"{name} failed"
    # multiprocess steps fork from a forkserver (a child of this process): stopping it reaps
    # it, so its CPU and the steps' it reaped count among this process's children.
    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu_seconds() - before,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_child(env: Mapping[str, str], name: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--run", name],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"job {name} failed under {env.get('TOL_EXECUTOR')}:\n{done.stderr}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of the live processes of a process group (a worker and its pool)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def group_peak_rss_mb(pgid: int) -> list[float]:
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            text = status.read_text()
            if int(Path(status.parent, "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            kb = next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM"))
            peaks.append(int(kb) / 1024)
    return peaks


@contextlib.contextmanager
def workers(env: Mapping[str, str], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two `tol-dagster worker`s, one after the other (each ready before the next starts)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(WORKERS):
            log = logs / f"worker-{index}.log"
            with log.open("wb") as out:
                started.append(
                    subprocess.Popen(
                        [TOL_DAGSTER, "worker", "--concurrency", "1"],
                        env=dict(env),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            deadline = time.monotonic() + 60
            while "ready" not in log.read_text():
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker {index} did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield started
    finally:
        for worker in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in started:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def measure_mode(env: Mapping[str, str], steps: int, repeat: int) -> dict[str, float]:
    """Median costs of `one` and `fan` under `env`'s executor, and the extra per step."""
    runs: dict[str, list[dict[str, float]]] = {"one": [], "fan": []}
    for _ in range(repeat):
        for name in ("one", "fan"):
            runs[name].append(run_child(env, name))
    median = {
        (name, key): statistics.median(r[key] for r in runs[name])
        for name in runs
        for key in ("wall_s", "cpu_s", "rss_mb")
    }
    return {
        "run_1_step_wall_s": median[("one", "wall_s")],
        "run_1_step_cpu_s": median[("one", "cpu_s")],
        "step_wall_s": (median[("fan", "wall_s")] - median[("one", "wall_s")]) / steps,
        "step_cpu_s": (median[("fan", "cpu_s")] - median[("one", "cpu_s")]) / steps,
        "run_rss_mb": median[("fan", "rss_mb")],
    }


def measure_celery(env: Mapping[str, str], steps: int, repeat: int, logs: Path) -> dict[str, float]:
    """As `measure_mode`, with the two workers' CPU added to each run's."""
    with workers(env, logs) as started:
        pgids = [os.getpgid(w.pid) for w in started]
        runs: dict[str, list[tuple[float, float]]] = {"one": [], "fan": []}
        rss = 0.0
        for _ in range(repeat):
            for name in ("one", "fan"):
                before = sum(group_cpu_seconds(p) for p in pgids)
                costs = run_child(env, name)
                spent = sum(group_cpu_seconds(p) for p in pgids) - before
                runs[name].append((costs["wall_s"], costs["cpu_s"] + spent))
                rss = costs["rss_mb"]
        worker_rss = max(peak for p in pgids for peak in group_peak_rss_mb(p))
    wall = {n: statistics.median(w for w, _ in r) for n, r in runs.items()}
    cpu = {n: statistics.median(c for _, c in r) for n, r in runs.items()}
    return {
        "run_1_step_wall_s": wall["one"],
        "run_1_step_cpu_s": cpu["one"],
        "step_wall_s": (wall["fan"] - wall["one"]) / steps,
        "step_cpu_s": (cpu["fan"] - cpu["one"]) / steps,
        "run_rss_mb": rss,
        "worker_rss_mb": worker_rss,
    }


def load_cost(code: str, env: Mapping[str, str]) -> dict[str, float]:
    """CPU, wall and peak RSS of a fresh `python -c code` (median of three)."""
    samples = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=dict(env), check=True, timeout=300)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        samples.append((cpu, wall, after.ru_maxrss / 1024))
    return {
        "cpu_s": statistics.median(s[0] for s in samples),
        "wall_s": statistics.median(s[1] for s in samples),
        # RUSAGE_CHILDREN's peak is the largest child's so far: run the larger load last.
        "rss_mb": max(s[2] for s in samples),
    }


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def pg_database() -> Iterator[str | None]:
    """A database of its own (URL), dropped after; None when PostgreSQL is not there."""
    if not answers(5432):
        yield None
        return
    name = f"tol_bench_{uuid.uuid4().hex[:10]}"

    def admin(statement: str) -> None:
        connection = psycopg2.connect(PG_ADMIN)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def print_table(steps: int, results: Mapping[str, Mapping[str, float]]) -> None:
    modes = [m for m in MODES if m in results]
    base = results["in_process"]
    print(f"\nexecutor overhead: trivial steps, {steps} extra per run, {WORKERS} workers")
    print(f"{'figure':<34}" + "".join(f"{m:>16}" for m in modes))
    for key, label in (
        ("run_1_step_wall_s", "run of 1 step, wall s"),
        ("run_1_step_cpu_s", "run of 1 step, CPU s"),
        ("step_wall_s", "extra per step, wall s"),
        ("step_cpu_s", "extra per step, CPU s"),
        ("run_rss_mb", "run process peak RSS, MB"),
        ("worker_rss_mb", "worker peak RSS, MB"),
    ):
        cells = [f"{results[m][key]:.3f}" if key in results[m] else "-" for m in modes]
        print(f"{label:<34}" + "".join(f"{c:>16}" for c in cells))
    for key, label in (
        ("step_cpu_s", "per-step CPU / in_process"),
        ("step_wall_s", "per-step wall / in_process"),
    ):
        cells = [f"{results[m][key] / base[key]:.1f}x" if base[key] > 0 else "-" for m in modes]
        print(f"{label:<34}" + "".join(f"{c:>16}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="extra no-op steps in `fan`")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each job per mode")
    parser.add_argument("--run", choices=("one", "fan"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_here(args.run)))
        return
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOL_", "DAGSTER_"))}
    with tempfile.TemporaryDirectory(prefix="tol-bench-exec-") as tmp, pg_database() as pg_url:
        env = {
            **base_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}",
            "TOL_HOME": str(Path(tmp) / "home"),
            "TOL_BENCH_STEPS": str(args.steps),
            **({"TOL_DAGSTER_PG_URL": pg_url} if pg_url else {}),
        }
        print(f"instance storage: {'PostgreSQL' if pg_url else 'SQLite (PostgreSQL not on 5432)'}")
        bare = load_cost("import dagster", env)
        code = load_cost(LOAD_CODE, env)
        print(f"{'process load':<34}{'CPU s':>10}{'wall s':>10}{'peak RSS MB':>14}")
        for label, cost in (("import dagster", bare), ("code location (defs loaded)", code)):
            print(
                f"{label:<34}{cost['cpu_s']:>10.2f}{cost['wall_s']:>10.2f}{cost['rss_mb']:>14.0f}"
            )
        results: dict[str, dict[str, float]] = {}
        run_child({**env, "TOL_EXECUTOR": "in_process"}, "one")  # creates the instance's tables
        results["in_process"] = measure_mode(
            {**env, "TOL_EXECUTOR": "in_process"}, args.steps, args.repeat
        )
        multiprocess = {**env, "TOL_EXECUTOR": "multiprocess", "TOL_WORKERS": str(WORKERS)}
        results["multiprocess"] = measure_mode(multiprocess, args.steps, args.repeat)
        if answers(5672):
            celery = {
                **env,
                "TOL_EXECUTOR": "celery",
                "TOL_CELERY_BROKER": BROKER,
                "TOL_CELERY_QUEUE": f"tol-bench-{uuid.uuid4().hex[:10]}",
            }
            results["celery"] = measure_celery(celery, args.steps, args.repeat, Path(tmp))
        else:
            print("celery: RabbitMQ is not on 127.0.0.1:5672, not measured")
        print_table(args.steps, results)


if __name__ == "__main__":
    main()

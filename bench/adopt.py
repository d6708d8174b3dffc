"""Adopt benchmark (issue 12, item 4): one run on a generated sample served by the local Hub.

Every figure is measured in the same run and printed beside its target:

- adopt's hashing (`store.hashing.sha256_files`, one thread per core, as `adopt` runs it)
  against coreutils' `sha256sum` on the same files, from the page cache: bytes per CPU-second
  (per core: target >= 0.9 of sha256sum's), and wall-clock throughput at the same parallelism
  (one `sha256sum` process per core). Alternating which goes first, median of the passes;
- bringing the files in, verified: `resync.adopt.adopt` (hash in parallel, hard-link into
  staging) against `HubClient.download` of the same files, 4 at a time as a sync fetches them
  (streamed sha256, stable partial, rename), from the local Hub as fast as the disk goes and
  capped at the plain-HTTP rate users report (50 MB/s per connection): the part of a sync that
  adopting replaces;
- wall time of `tol-dagster adopt FOLDER` against `tol-dagster sync`, each from an empty data
  home to a published, gated mirror of the same files. Both run the whole gate (each file
  inspected: ~4 s of CPU per 509 MB file), which is most of either command's time here.

    .venv/bin/python bench/adopt.py                        # 4 files of 350k rows (~509 MB each)
    .venv/bin/python bench/adopt.py --rows 4000 --files 2  # a smoke run (under a minute)

`--workdir DIR` keeps the sample there and reuses it (the same folder as bench/sync.py's works).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sync import (
    CAPPED_BYTES_PER_S,
    DEFAULT_FILES,
    DEFAULT_ROWS,
    Figure,
    HubProcess,
    command_env,
    ensure_sample,
    file_bytes_sent,
    hub_env,
    run_and_print,
)

from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import DEFAULT_REPO_ID
from tol_dagster.store.hashing import sha256_files, usable_cores
from tol_dagster.store.layout import Layout

if TYPE_CHECKING:  # imported in `bench`: the Hub client reads HF_* once, when imported
    from tol_dagster.hub.client import HubClient
    from tol_dagster.hub.remote import RemoteConfig


@dataclass(frozen=True)
class Hashing:
    """Throughput of one way of hashing the files: MB per CPU-second and per wall second."""

    mb_per_cpu_s: float
    mb_per_s: float


def hash_with_adopt(files: list[Path], threads: int) -> tuple[Hashing, dict[str, str]]:
    total = sum(p.stat().st_size for p in files) / 1e6
    wall, cpu = time.perf_counter(), time.process_time()
    digests = sha256_files(files, threads=threads)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Hashing(total / cpu, total / wall), {p.name: d for p, d in digests.items()}


def hash_with_sha256sum(files: list[Path], processes: int) -> tuple[Hashing, dict[str, str]]:
    """`sha256sum`, one process per core, each given every `processes`-th file."""
    total = sum(p.stat().st_size for p in files) / 1e6
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    running = [
        subprocess.Popen(["sha256sum", *map(str, files[i::processes])], stdout=subprocess.PIPE)
        for i in range(min(processes, len(files)))
    ]
    outputs = [p.communicate()[0].decode() for p in running]
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    digests = {
        Path(line.split(maxsplit=1)[1]).name: line.split()[0]
        for out in outputs
        for line in out.splitlines()
    }
    return Hashing(total / cpu, total / wall), digests


def hashing_ratios(files: list[Path], repeats: int) -> tuple[float, float, Hashing, Hashing]:
    """adopt / sha256sum per CPU-second and in wall time, medians of alternating passes."""
    cores = usable_cores()
    for path in files:  # into the page cache: both then measure hashing, not the disk
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass
    ours, theirs = [], []
    for index in range(repeats):
        order = ("adopt", "sha256sum") if index % 2 == 0 else ("sha256sum", "adopt")
        for way in order:
            if way == "adopt":
                measured, mine = hash_with_adopt(files, cores)
                ours.append(measured)
            else:
                measured, coreutils = hash_with_sha256sum(files, cores)
                theirs.append(measured)
    if mine != coreutils:
        raise RuntimeError(f"adopt and sha256sum disagree: {mine} vs {coreutils}")
    per_cpu = statistics.median(
        o.mb_per_cpu_s / t.mb_per_cpu_s for o, t in zip(ours, theirs, strict=True)
    )
    wall = statistics.median(o.mb_per_s / t.mb_per_s for o, t in zip(ours, theirs, strict=True))
    return per_cpu, wall, ours[-1], theirs[-1]


def run_command(argv: list[str], env: dict[str, str], log_path: Path) -> float:
    """`tol-dagster ARGV` in a process of its own, from an empty data home; its wall seconds."""
    shutil.rmtree(env["TOL_HOME"], ignore_errors=True)
    os.sync()  # the previous run's writeback does not slow this one down
    started = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "tol_dagster.cli.main", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"tol-dagster {argv[0]} exited {done.returncode}:\n{log_path.read_text()}"
        )
    return seconds


def bring_in_seconds(home: Path, folder: Path, remote: RemoteConfig) -> float:
    """`adopt` alone (no Dagster, no gate): hash `folder` and link its files into staging."""
    from tol_dagster.resync.adopt import adopt

    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    report = adopt(Layout(home), remote, folder, log=lambda _: None)
    seconds = time.perf_counter() - started
    if len(report.adopted) != len(remote.files):
        raise RuntimeError(f"adopt took {len(report.adopted)} of {len(remote.files)} files")
    shutil.rmtree(home, ignore_errors=True)
    return seconds


def download_seconds(client: HubClient, remote: RemoteConfig, scratch: Path) -> float:
    """Every file of `remote` by `HubClient.download`, 4 at a time (TOL_MAX_PARALLEL_DOWNLOADS)."""
    shutil.rmtree(scratch, ignore_errors=True)
    os.sync()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = [
            pool.submit(
                client.download, f, remote.commit, scratch / f.name, partial_dir=scratch / "partial"
            )
            for f in remote.files
        ]
        for future in done:
            future.result()
    seconds = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return seconds


def bench(work: Path, *, rows: int, files: int, repeats: int) -> list[Figure]:
    os.environ["HF_HOME"] = str(work / "hf-home")
    built = ensure_sample(work / "sample", rows=rows, files=files)
    sample_files = sorted((work / "sample" / DEFAULT_CONFIG).glob("*.parquet"))
    megabytes = sum(p.stat().st_size for p in sample_files) / 1e6
    print(
        f"sample: {rows:,} rows in {files} files, {megabytes:,.1f} MB "
        + (f"(built in {built:.0f} s)" if built is not None else "(reused)"),
        flush=True,
    )
    per_cpu, wall, ours, theirs = hashing_ratios(sample_files, repeats)
    print(
        f"hashing: adopt {ours.mb_per_cpu_s:,.0f} MB per CPU-s ({ours.mb_per_s:,.0f} MB/s), "
        f"sha256sum {theirs.mb_per_cpu_s:,.0f} MB per CPU-s ({theirs.mb_per_s:,.0f} MB/s), "
        f"{usable_cores()} cores",
        flush=True,
    )
    hub_root = work / "hub"
    shutil.rmtree(hub_root, ignore_errors=True)
    shutil.copytree(work / "sample", hub_root, copy_function=os.link)
    hub = HubProcess(hub_root, hub_env())
    try:
        home = work / "home"
        env = command_env(home, hub.endpoint)
        from tol_dagster.hub.client import HubClient

        client = HubClient(hub.endpoint, DEFAULT_REPO_ID, None)
        remote = client.remote_config(DEFAULT_CONFIG)
        linked = bring_in_seconds(home, hub_root, remote)
        fetched = download_seconds(client, remote, work / "downloads")
        hub.reset()
        adopt_s = run_command(["adopt", str(hub_root), "--json"], env, work / "adopt.log")
        adopted_bytes = file_bytes_sent(hub.stats())
        sync_s = run_command(["sync"], env, work / "sync.log")
        hub.cap_bandwidth(CAPPED_BYTES_PER_S)
        capped = download_seconds(client, remote, work / "downloads")
    finally:
        hub.stop()
        shutil.rmtree(work / "home", ignore_errors=True)
    print(
        f"bringing {megabytes:,.0f} MB in: adopt {linked:.1f} s, download {fetched:.1f} s, "
        f"at {CAPPED_BYTES_PER_S / 1e6:.0f} MB/s per connection {capped:.1f} s; "
        f"commands: adopt {adopt_s:.1f} s ({adopted_bytes:,} bytes fetched), sync {sync_s:.1f} s",
        flush=True,
    )
    return [
        Figure(
            "adopt / sha256sum hashing, MB per CPU-second",
            f"{per_cpu:.2f} ({ours.mb_per_cpu_s:,.0f} vs {theirs.mb_per_cpu_s:,.0f})",
            ">= 0.9",
            per_cpu >= 0.9,
        ),
        Figure(
            f"adopt / sha256sum hashing, wall MB/s on {usable_cores()} cores",
            f"{wall:.2f} ({ours.mb_per_s:,.0f} vs {theirs.mb_per_s:,.0f})",
            "",
            None,
        ),
        Figure(
            "adopt / download, files brought in verified, local Hub uncapped",
            f"{linked / fetched:.2f} ({linked:.1f} s vs {fetched:.1f} s)",
            "< 1",
            linked < fetched,
        ),
        Figure(
            f"adopt / download, files brought in verified, Hub at {CAPPED_BYTES_PER_S / 1e6:.0f} MB/s per connection",
            f"{linked / capped:.2f} ({linked:.1f} s vs {capped:.1f} s)",
            "< 1",
            linked < capped,
        ),
        Figure(
            "`tol-dagster adopt` / `sync` wall time, local Hub uncapped (gate included)",
            f"{adopt_s / sync_s:.2f} ({adopt_s:.1f} s vs {sync_s:.1f} s)",
            "",
            None,
        ),
        Figure("bytes adopt fetched from the Hub", f"{adopted_bytes:,}", "0", adopted_bytes == 0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--repeats", type=int, default=3, help="hashing passes (default 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sample here")
    args = parser.parse_args(argv)
    if shutil.which("sha256sum") is None:
        parser.error("sha256sum (coreutils) is not on PATH: it is the baseline")
    started = time.perf_counter()
    run_and_print(
        args.workdir,
        "tol-bench-adopt-",
        lambda work: bench(work, rows=args.rows, files=args.files, repeats=args.repeats),
    )
    print(f"\nbench took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

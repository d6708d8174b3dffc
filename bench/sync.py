"""Sync benchmark (issue 3, item 9): one run on a generated sample served by the local Hub.

Every figure is measured in the same run and printed beside its target:

- Hub requests for an in-sync check: the sensor's tick (`HubClient.head_commit`) and a no-op
  `tol-dagster sync` (all its requests, and how many of them touch files);
- bytes fetched / bytes of the changed file, after upstream re-encodes one file;
- download-and-verify throughput (`HubClient.download`: stable partial, streaming sha256) over
  a plain streaming GET to disk of the same file from the same server (the faster of httpx2
  and urllib), file by file, alternating which goes first, median of the pairs' ratios; and
  this process's CPU per GB for each (the Hub's server runs apart): steadier than wall time;
- the gate's throughput (`file_facts.inspect_file`, re-hashing the file as `sync.file_facts`
  does), in MB per wall second and per CPU second (target >= 400), and, with the Hub capped at
  50 MB/s per connection, gate time / download time per file;
- what the `emb` checks (row digests, norm bounds) and the sha256 re-hash cost in CPU seconds
  per GB of parquet, measured on the same files beside the cost of decoding `emb` alone;
- peak RSS of `tol-dagster sync`, the largest of its three runs (first, no-op, one file
  changed); each runs in a process of its own, and so does the Hub.

    .venv/bin/python bench/sync.py                        # 4 files of 350k rows (~520 MB each)
    .venv/bin/python bench/sync.py --rows 4000 --files 2  # a smoke run (about a minute)

The full run takes 5-8 minutes on 2 cores (1.5 of them building the sample) and ~7 GB of
disk. The sample is generated into a temporary folder that is deleted at the end;
`--workdir DIR` keeps it there and reuses it on the next run with the same size. Wall-clock
times on a shared machine mostly measure the neighbours, so the gate is also given in CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import OFFLINE_HF_ENV

if TYPE_CHECKING:
    from tol_dagster.hub.client import HubClient
    from tol_dagster.hub.remote import RemoteConfig, RemoteFile

#: What the real files look like: ~520 MB and 350k rows each (PERF.md).
DEFAULT_ROWS = 1_400_000
DEFAULT_FILES = 4
SEED = 11
#: The plain-HTTP rate users report from the Hub, per connection.
CAPPED_BYTES_PER_S = 50_000_000
#: The gate's per-file checks, MB of parquet per CPU second (issue 11, item 3).
TARGET_GATE_MB_PER_CPU_S = 400
#: Request kinds of the local Hub's counters that touch a file's bytes or metadata.
FILE_REQUESTS = ("resolve_head", "resolve_get", "lfs_get")


@dataclass(frozen=True)
class Figure:
    """One line of the result table; `passed` is None for a figure without a target."""

    name: str
    value: str
    target: str
    passed: bool | None


# --- the local Hub, in a process of its own -------------------------------------------------


class HubProcess:
    """`python -m tol_dagster.devtools.localhub ROOT`, driven through its admin API."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tol_dagster.devtools.localhub", str(root), "--port", "0"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().strip()
        if not first.startswith("endpoint="):
            self.stop()
            raise RuntimeError(f"the local Hub did not start (first line {first!r})")
        self.endpoint = first.removeprefix("endpoint=")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def _admin(self, method: str, op: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.endpoint}/_admin/{op}", data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def reset(self) -> None:
        """Clear the counters and the faults."""
        self._admin("POST", "reset", {})

    def cap_bandwidth(self, bytes_per_s: int) -> None:
        self._admin(
            "POST",
            "faults",
            {"kind": "bandwidth", "request_kind": "lfs_get", "bytes_per_s": bytes_per_s},
        )

    def stats(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = self._admin("GET", "stats")
        return stats


def hub_env() -> dict[str, str]:
    """This process's environment without a token or endpoint of the real Hub."""
    return {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}


def command_env(home: Path, endpoint: str) -> dict[str, str]:
    """The environment of a `tol-dagster` command with data home `home`, against `endpoint`."""
    return hub_env() | {
        "TOL_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "TOL_HUB_ENDPOINT": endpoint,
        "TOL_CONFIGS": DEFAULT_CONFIG,
    }


def requests_made(stats: dict[str, dict[str, int]], kinds: tuple[str, ...] | None = None) -> int:
    """Requests counted by the Hub (`range_requests` re-counts GETs, so it is left out)."""
    return sum(
        v["count"]
        for k, v in stats.items()
        if k != "range_requests" and (kinds is None or k in kinds)
    )


def file_bytes_sent(stats: dict[str, dict[str, int]]) -> int:
    return sum(stats[kind]["bytes"] for kind in FILE_REQUESTS)


# --- tol-dagster sync, in a process of its own ----------------------------------------------


@dataclass(frozen=True)
class SyncRun:
    seconds: float
    max_rss_bytes: int
    stats: dict[str, dict[str, int]]


def run_sync(hub: HubProcess, env: dict[str, str], log_path: Path) -> SyncRun:
    """`tol-dagster sync` with the Hub's counters reset before; its own peak RSS from wait4."""
    hub.reset()
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tol_dagster.cli.main", "sync"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"tol-dagster sync exited {process.returncode}; its output:\n{log_path.read_text()}"
        )
    # ru_maxrss is in KiB on Linux.
    return SyncRun(seconds, usage.ru_maxrss * 1024, hub.stats())


# --- the sample and the upstream edit --------------------------------------------------------


def ensure_sample(folder: Path, *, rows: int, files: int) -> float | None:
    """Build the sample into `folder` unless one of this size is there; the seconds it took."""
    from tol_dagster.devtools.sample import build_sample

    stamp = folder / ".bench-sample.json"
    wanted = {"rows": rows, "files": files, "seed": SEED, "config": DEFAULT_CONFIG}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return None
    shutil.rmtree(folder, ignore_errors=True)
    report = build_sample(folder, rows=rows, files=files, seed=SEED, config=DEFAULT_CONFIG)
    stamp.write_text(json.dumps(wanted))
    return report.seconds


def reencode_upstream(path: Path, scratch: Path) -> None:
    """Upstream re-encodes one file (ZSTD level 1, no dictionaries): same rows, new bytes.

    Written beside the Hub's folder and renamed in, so the Hub never lists a half-written file;
    the rename also breaks the hard link to the pristine sample.
    """
    source = pq.ParquetFile(path)
    with pq.ParquetWriter(
        scratch,
        source.schema_arrow,
        compression="zstd",
        compression_level=1,
        use_dictionary=False,
        write_statistics=False,
        write_page_index=True,
    ) as writer:
        for group in range(source.num_row_groups):
            writer.write_table(source.read_row_group(group))
    os.replace(scratch, path)


# --- downloads --------------------------------------------------------------------------------


def _resolve_url(client: HubClient, file: RemoteFile, commit: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(
        client.repo_id, file.path, repo_type="dataset", revision=commit, endpoint=client.endpoint
    )


def plain_get_httpx2(url: str, dest: Path) -> None:
    """A streaming GET to disk that follows the CDN redirect: no partial, no hash."""
    import httpx2

    with (
        httpx2.Client(follow_redirects=True, timeout=60) as client,
        client.stream("GET", url) as response,
        dest.open("wb") as out,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw():
            out.write(chunk)


def plain_get_urllib(url: str, dest: Path) -> None:
    """The standard library's streaming GET to disk (urllib follows redirects itself)."""
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


PLAIN_GETS: dict[str, Callable[[str, Path], None]] = {
    "httpx2": plain_get_httpx2,
    "urllib": plain_get_urllib,
}


def timed(action: Callable[..., object], *args: Any) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `action(*args)`: on a busy machine they differ a lot."""
    wall, cpu = time.perf_counter(), time.process_time()
    action(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


@contextlib.contextmanager
def scratch_dir(path: Path) -> Iterator[Path]:
    """An empty folder, removed afterwards and flushed to disk so that writeback of one
    measurement does not slow down the next."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.sync()


@dataclass(frozen=True)
class Throughput:
    ratio: float
    ours_mb_s: float
    plain_mb_s: dict[str, float]
    pairs: int
    cpu_s_per_gb: dict[str, float]  # by method, ours included: the client's CPU


def download_throughput(
    client: HubClient, remote: RemoteConfig, work: Path, repeats: int
) -> Throughput:
    """Our download against each plain GET, file by file, the order rotating every file."""
    methods: list[tuple[str, Callable[[RemoteFile, Path], object]]] = [
        (
            "ours",
            lambda f, d: client.download(f, remote.commit, d / f.name, partial_dir=d / "partial"),
        ),
        *[
            (name, lambda f, d, get=get: get(_resolve_url(client, f, remote.commit), d / f.name))
            for name, get in PLAIN_GETS.items()
        ],
    ]
    rates: dict[str, list[float]] = {name: [] for name, _ in methods}
    cpu: dict[str, list[float]] = {name: [] for name, _ in methods}
    turn = 0
    for _ in range(repeats):
        for file in remote.files:
            order = methods[turn % len(methods) :] + methods[: turn % len(methods)]
            turn += 1
            for name, fetch in order:
                with scratch_dir(work / "throughput") as folder:
                    wall, cpu_s = timed(fetch, file, folder)
                rates[name].append(file.size / wall)
                cpu[name].append(cpu_s * 1e9 / file.size)
    # Each plain method's rate beside ours, pair by pair (same file, same minute).
    plain = {name: statistics.median(rates[name]) / 1e6 for name in PLAIN_GETS}
    fastest = max(plain, key=lambda name: plain[name])
    ratios = [o / p for o, p in zip(rates["ours"], rates[fastest], strict=True)]
    return Throughput(
        statistics.median(ratios),
        statistics.median(rates["ours"]) / 1e6,
        plain,
        len(ratios),
        {name: statistics.median(per_gb) for name, per_gb in cpu.items()},
    )


@dataclass(frozen=True)
class GateTiming:
    name: str
    size: int
    download_s: float
    gate_s: float
    gate_cpu_s: float
    emb_decode_cpu_s: float
    emb_checks_cpu_s: float
    sha256_cpu_s: float


def emb_check_cost(path: Path, config: str) -> tuple[float, float]:
    """CPU seconds of decoding `emb` as the gate does, and of the `emb` checks (row digests,
    norm bounds) on the same decoded batches: side by side, one pass."""
    from tol_dagster.schema import emb_bounds
    from tol_dagster.validation import emb_digests, emb_norms, emb_scan

    bounds = emb_bounds(config)
    scan = emb_norms.BoundsScan(bounds) if bounds is not None else None
    parquet = pq.ParquetFile(path, buffer_size=emb_scan.READ_BUFFER_BYTES, pre_buffer=False)
    decode = checks = 0.0
    mark = time.process_time()
    for batch in parquet.iter_batches(
        batch_size=emb_scan.EMB_BATCH_ROWS, columns=["emb"], use_threads=False
    ):
        decoded = time.process_time()
        decode += decoded - mark
        matrix = emb_digests.emb_matrix(batch.column(0))
        assert matrix is not None
        emb_digests.row_digests(matrix)
        norms, peaks = emb_norms.norms_and_peaks(matrix)  # peaks: the finiteness check's
        if scan is not None:
            scan.add(norms, peaks, None, 0)
        mark = time.process_time()
        checks += mark - decoded
    return decode, checks


def gate_against_capped_download(
    client: HubClient, remote: RemoteConfig, hub: HubProcess, work: Path
) -> list[GateTiming]:
    """Per file: a download at 50 MB/s, then `inspect_file` on it, each timed alone."""
    # Great Expectations is imported once per process (4-7 s); a sync pays it once, not per file.
    import great_expectations  # noqa: F401

    from tol_dagster.schema import emb_bounds, expected_schema
    from tol_dagster.store.hashing import sha256_file
    from tol_dagster.validation import file_facts

    timings = []
    hub.reset()
    hub.cap_bandwidth(CAPPED_BYTES_PER_S)
    try:
        for file in remote.files:
            with scratch_dir(work / "gate") as folder:
                dest = folder / file.name
                download_s, _ = timed(
                    functools.partial(client.download, partial_dir=folder / "partial"),
                    file,
                    remote.commit,
                    dest,
                )
                gate_s, gate_cpu_s = timed(
                    functools.partial(
                        file_facts.inspect_file,
                        expected_sha256=file.sha256,
                        actual_sha256=None,  # hashed from disk again, as `sync.file_facts` does
                        expected_schema=expected_schema(remote.config),
                        uuid_hashes_path=folder / "uuid_hashes.npy",
                        emb_bounds=emb_bounds(remote.config),
                        emb_digests_path=folder / "emb_digests.npy",
                    ),
                    dest,
                )
                decode_cpu_s, checks_cpu_s = emb_check_cost(dest, remote.config)
                _, sha256_cpu_s = timed(sha256_file, dest)
                timings.append(
                    GateTiming(
                        file.name,
                        file.size,
                        download_s,
                        gate_s,
                        gate_cpu_s,
                        decode_cpu_s,
                        checks_cpu_s,
                        sha256_cpu_s,
                    )
                )
    finally:
        hub.reset()
    return timings


# --- the run -----------------------------------------------------------------------------------


def bench(work: Path, *, rows: int, files: int, repeats: int) -> list[Figure]:
    os.environ["HF_HOME"] = str(work / "hf-home")
    from tol_dagster.hub.client import HubClient
    from tol_dagster.settings import DEFAULT_REPO_ID

    built = ensure_sample(work / "sample", rows=rows, files=files)
    sample_files = sorted((work / "sample" / DEFAULT_CONFIG).glob("*.parquet"))
    sample_bytes = sum(p.stat().st_size for p in sample_files)
    print(
        f"sample: {rows:,} rows in {files} files, {sample_bytes / 1e6:,.1f} MB "
        + (f"(built in {built:.0f} s)" if built is not None else "(reused)"),
        flush=True,
    )
    hub_root = work / "hub"
    shutil.rmtree(hub_root, ignore_errors=True)
    shutil.copytree(work / "sample", hub_root, copy_function=os.link)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)

    hub = HubProcess(hub_root, hub_env())
    try:
        env = command_env(home, hub.endpoint)
        client = HubClient(hub.endpoint, DEFAULT_REPO_ID, None)

        first = run_sync(hub, env, work / "sync-first.log")
        print(
            f"first sync: {first.seconds:.1f} s for {sample_bytes / 1e6:,.1f} MB "
            f"(fetch, verify, gate, publish; {sample_bytes / 1e6 / first.seconds:,.0f} MB/s end to end), "
            f"peak RSS {first.max_rss_bytes / 1e9:.2f} GB",
            flush=True,
        )

        hub.reset()
        client.head_commit()
        tick_requests = requests_made(hub.stats())
        noop = run_sync(hub, env, work / "sync-noop.log")
        noop_requests, noop_file_requests = (
            requests_made(noop.stats),
            requests_made(noop.stats, FILE_REQUESTS),
        )
        print(
            f"no-op sync: {noop.seconds:.1f} s, Hub requests {json.dumps(_nonzero(noop.stats))}",
            flush=True,
        )

        edited = hub_root / DEFAULT_CONFIG / sample_files[0].name
        reencode_upstream(edited, work / "edit.tmp")
        changed_bytes = edited.stat().st_size
        edit = run_sync(hub, env, work / "sync-edit.log")
        fetched_bytes = file_bytes_sent(edit.stats)
        print(
            f"one file re-encoded upstream: sync {edit.seconds:.1f} s, fetched {fetched_bytes:,} bytes "
            f"for {changed_bytes:,} changed",
            flush=True,
        )

        remote = client.remote_config(DEFAULT_CONFIG)
        throughput = download_throughput(client, remote, work, repeats)
        plain_text = ", ".join(f"{n} {r:,.0f}" for n, r in throughput.plain_mb_s.items())
        print(
            f"download and verify {throughput.ours_mb_s:,.0f} MB/s; plain GET {plain_text} MB/s "
            f"(medians of {throughput.pairs} files each)",
            flush=True,
        )

        timings = gate_against_capped_download(client, remote, hub, work)
        for t in timings:
            print(
                f"  {t.name}: {t.size / 1e6:,.1f} MB, download at 50 MB/s {t.download_s:.1f} s, "
                f"gate {t.gate_s:.1f} s ({t.size / 1e6 / t.gate_s:,.0f} MB/s; CPU {t.gate_cpu_s:.1f} s)",
                flush=True,
            )
    finally:
        hub.stop()

    gate_ratios = [t.gate_s / t.download_s for t in timings]
    gate_ratio = statistics.median(gate_ratios)
    gate_cpu_ratio = statistics.median(t.gate_cpu_s / t.download_s for t in timings)
    gate_mb_s = statistics.median(t.size / 1e6 / t.gate_s for t in timings)
    gate_cpu_mb_s = statistics.median(t.size / 1e6 / t.gate_cpu_s for t in timings)
    gigabytes = sum(t.size for t in timings) / 1e9
    emb_checks_per_gb = sum(t.emb_checks_cpu_s for t in timings) / gigabytes
    emb_decode_per_gb = sum(t.emb_decode_cpu_s for t in timings) / gigabytes
    gate_cpu_per_gb = sum(t.gate_cpu_s for t in timings) / gigabytes
    sha256_per_gb = sum(t.sha256_cpu_s for t in timings) / gigabytes
    peak_rss = max(first.max_rss_bytes, noop.max_rss_bytes, edit.max_rss_bytes)
    fetch_ratio = fetched_bytes / changed_bytes
    per_file = sample_bytes / len(sample_files) / 1e6
    return [
        Figure(
            "Hub requests, in-sync sensor tick (head_commit)",
            f"{tick_requests}",
            "<= 2",
            tick_requests <= 2,
        ),
        Figure(
            "Hub requests, no-op `tol-dagster sync` (of them on files)",
            f"{noop_requests} ({noop_file_requests})",
            "<= 2 (0)",
            noop_requests <= 2 and noop_file_requests == 0,
        ),
        Figure(
            "bytes fetched / bytes of changed files",
            f"{fetch_ratio:.2f}",
            "1.00",
            f"{fetch_ratio:.2f}" == "1.00",
        ),
        Figure(
            "download+verify / plain GET throughput",
            f"{throughput.ratio:.2f} ({throughput.ours_mb_s:,.0f} vs {max(throughput.plain_mb_s.values()):,.0f} MB/s)",
            ">= 0.80",
            throughput.ratio >= 0.8,
        ),
        Figure(
            "download CPU s per GB (this process; the Hub apart)",
            ", ".join(f"{name} {s:.2f}" for name, s in throughput.cpu_s_per_gb.items()),
            "-",
            None,
        ),
        Figure(
            "gate throughput (inspect_file), MB/s of parquet",
            f"{gate_mb_s:,.0f} (per CPU second {gate_cpu_mb_s:,.0f})",
            "-",
            None,
        ),
        Figure(
            "gate, MB of parquet per CPU second (sha256 re-hash included)",
            f"{gate_cpu_mb_s:,.0f}",
            f">= {TARGET_GATE_MB_PER_CPU_S}",
            gate_cpu_mb_s >= TARGET_GATE_MB_PER_CPU_S,
        ),
        Figure(
            "emb checks (digests + norm bounds), CPU s per GB of parquet",
            f"{emb_checks_per_gb:.2f} (decoding emb {emb_decode_per_gb:.2f}; "
            f"sha256 re-hash {sha256_per_gb:.2f}; whole gate {gate_cpu_per_gb:.2f})",
            "-",
            None,
        ),
        Figure(
            "gate time / download time per file at 50 MB/s",
            f"{gate_ratio:.2f} (max {max(gate_ratios):.2f}; CPU time {gate_cpu_ratio:.2f})",
            "<= 1.0",
            gate_ratio <= 1.0,
        ),
        Figure(
            f"peak RSS of `tol-dagster sync` ({len(sample_files)} x {per_file:,.0f} MB)",
            f"{peak_rss / 1e9:.2f} GB",
            "< 2 GB",
            peak_rss < 2e9,
        ),
    ]


def _nonzero(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    return {k: v["count"] for k, v in stats.items() if v["count"]}


def print_table(figures: list[Figure]) -> None:
    rows = [("figure", "value", "target", "")] + [
        (f.name, f.value, f.target, "" if f.passed is None else "PASS" if f.passed else "MISS")
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def run_and_print(
    workdir: Path | None, prefix: str, measure: Callable[[Path], list[Figure]]
) -> None:
    """`measure(work)` offline, in `workdir` (kept) or a temporary folder (removed), then its
    table of figures."""
    os.environ.update(OFFLINE_HF_ENV)
    with contextlib.ExitStack() as stack:
        work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        work.mkdir(parents=True, exist_ok=True)
        figures = measure(work.resolve())
    print()
    print_table(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows in all (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--files", type=int, default=DEFAULT_FILES, help=f"files (default {DEFAULT_FILES})"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="passes over the files for throughput (default 3)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the sample here and reuse it"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run_and_print(
        args.workdir,
        "tol-bench-sync-",
        lambda work: bench(work, rows=args.rows, files=args.files, repeats=args.repeats),
    )
    print(
        f"\nbench took {time.perf_counter() - started:.0f} s; bench process peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

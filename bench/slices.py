"""Slice extraction benchmark (issue 4, item 8): one run on a generated mirror, side by side.

Three ways, interleaved, medians of `--runs` rounds, for a family-sized slice (~100k-200k rows),
a species-sized one (~2k rows) and the largest order; the largest kingdom is measured for our
way and the floor only (its copy takes minutes and GBs of RAM):

- copy:  the dataset card's `COPY (SELECT * FROM read_parquet('<glob>') WHERE family = ?) TO
         '<out>.parquet'`, with the key's rank in place of `family`. For a species it is
         `WHERE genus = ? AND species IN (epithet, binomial)`, which DuckDB pushes into the scan
         and which selects the same rows as our key here (checked). Our own `species=` filter
         (binomial OR genus + epithet) is not pushed down: a COPY with it decodes every `emb`
         of the mirror (`--species-or` shows it).
- ours:  `tol_dagster.slices.extract.extract_slice` with the taxon index: fsync and sha256 included.
- checked: ours plus every blocking check of the slice before it is published, as the slices
         asset runs it (row count, key, uuid uniqueness, schema, and `emb_matches_mirror`,
         which reads the slice back with pyarrow and looks each row's uuid and `emb` digest up
         in the digests the gate kept for the mirror files: computed once per file before the
         ways run, as the gate would have).
- floor: reading the bytes of the row groups that hold the slice, then writing and fsyncing as
         many bytes as our output has: what any way must at least do.
- unspliced (with `--unspliced`): ours with page-level splicing turned off
         (`splices.PAGE_SPLICES`): row groups the slice covers only partly are decoded and encoded
         whole, as before page-level splicing; beside ours, it shows what splicing gains.

A whole rank (`--rank family`, on unless `--no-rank`), once (`--rank-runs`), in the same run:

- rank-copy:  DuckDB's `COPY (SELECT * FROM read_parquet('<glob>')) TO '<dir>' (FORMAT parquet,
              PARTITION_BY (family))`: one file per family, `emb` turned into `list<float>`.
- rank-ours:  `slices.rank_pass`: a slice per value in one pass, exact schema, each published
              atomically (the catalog is not written: its one writer runs once after), over
              `--rank-workers` processes (default `TOL_RANK_WORKERS`, as the asset runs it):
              their CPU is counted, and their peak RSS as each worker at the largest one's.
- rank-checked: rank-ours with every blocking check of every slice, as `rank_slices` runs it.
- rank-floor: reading every byte of the mirror once, then writing and fsyncing as many bytes as
              rank-ours wrote.
- dagster:    Dagster's bookkeeping per dynamic partition: `--dagster-partitions` partitions of
              an asset that does nothing, materialized in one single-run backfill on SQLite; set
              against the data work per value of rank-checked, it decides the Dagster shape
              (one partition per value only if Dagster's share stays <= 10%).

Each way runs in its own process, so its peak RSS (VmHWM) is its own. Times cover the work
only, wall and CPU (user + sys, every thread), in a warmed-up process as a Dagster worker would
be (modules imported, the process's DuckDB database open). Page cache is warm for every way,
and dirty pages are flushed before each (the copy does not fsync its output: the next way's
fsync would otherwise write it back).
The machine is shared and noisy: compare the ratios of one run, and read CPU next to wall.

Targets: ours >= 2.5x faster than the copy for the family-sized slice, >= 1.25x for the
species-sized one (extraction; the checked way's ratios and the checks' CPU per GB of slice are
printed beside them), `emb` kept as `fixed_size_list<halffloat>[dim]`, peak RSS < 2 GB for the
largest order. Whole rank: ours >= 2x faster than DuckDB's PARTITION_BY copy and within 2x of
the floor; peak RSS < 2 GB.

    .venv/bin/python bench/slices.py                          # 2.8M rows, 8 files of ~520 MB
    .venv/bin/python bench/slices.py --rows 400000 --files 4  # smaller, quicker
    .venv/bin/python bench/slices.py --workdir /tmp/slices-bench   # keep the mirror for reruns

The mirror (~4 GB at the default size) is generated into a temporary folder and removed after,
unless `--workdir` names a folder to keep it in (a matching mirror there is reused).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.summaries import build_summaries, read_summary
from tol_dagster.derived.taxon_index import build_taxon_index, read_taxon_index
from tol_dagster.devtools.sample import build_sample
from tol_dagster.schema import DEFAULT_CONFIG, expected_schema, quote_ident
from tol_dagster.settings import Settings
from tol_dagster.slices import splices
from tol_dagster.slices.checks import slice_checks
from tol_dagster.slices.counts import expected_count
from tol_dagster.slices.extract import extract_slice
from tol_dagster.slices.keys import SliceKey, parse_slice_key, split_binomial, to_sql_filter
from tol_dagster.slices.locate import plan_scans
from tol_dagster.slices.rank_pass import publish_rank
from tol_dagster.slices.rank_plan import plan_rank
from tol_dagster.slices.write import EMB_MIN_GAIN, ZSTD_LEVEL
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.emb_digests import ensure_table

CONFIG = DEFAULT_CONFIG
WAYS = ("copy", "ours", "checked", "floor")
UNSPLICED = "unspliced"
#: Ours against the copy, wall: issue 7's targets (kept with the checks in place).
TARGETS = {"family-sized": 2.5, "species-sized": 1.25}
#: Issue 11's: (wall, CPU or None) against the copy, and ours within this many floors' wall.
FULL_SCALE_TARGETS = {"family-sized": (5.0, 4.0), "species-sized": (3.0, None)}
FLOOR_TARGETS = {"family-sized": 3.0}
RSS_LIMIT_MB = 2048
RSS_ROLES = ("largest order", "largest kingdom")
RANK_WAYS = ("rank-copy", "rank-ours", "rank-checked", "rank-floor")
#: Whole rank: ours at least this many times faster than the copy, within this many floors.
RANK_COPY_TARGET, RANK_FLOOR_TARGET = 2.0, 2.0
#: Dagster's share of a rank's work above which a rank is one materialization.
DAGSTER_SHARE_LIMIT = 0.10


@dataclass(frozen=True)
class Measure:
    """One way run once, in its own process."""

    seconds: float
    cpu: float
    rss_mb: float
    bytes: int
    rows: int
    emb_type: str
    note: str = ""


# --- the mirror and the slices ------------------------------------------------------------------


def prepare(workdir: Path, rows: int, files: int, row_group_size: int, seed: int) -> None:
    """A generated mirror and its taxon index under `workdir` (reused when it matches)."""
    marker = workdir / "bench-slices.json"
    wanted = {"rows": rows, "files": files, "row_group_size": row_group_size, "seed": seed}
    if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
        started = time.perf_counter()
        report = build_sample(
            workdir / "sample", rows=rows, files=files, seed=seed, row_group_size=row_group_size
        )
        print(
            f"generated {rows:,} rows in {files} files ({report.bytes / 2**20:,.0f} MB) "
            f"in {time.perf_counter() - started:.0f} s"
        )
        marker.write_text(json.dumps(wanted))
    folder = workdir / "sample" / CONFIG
    mirror = [MirrorFile(p.name, sha256_file(p), p) for p in sorted(folder.glob("*.parquet"))]
    (workdir / "sha256s.json").write_text(json.dumps({f.name: f.sha256 for f in mirror}))
    started = time.perf_counter()
    layout = Layout(workdir / "home")
    result = build_taxon_index(mirror, layout, CONFIG)
    size = sum(f.path.stat().st_size for f in mirror) / 2**20
    print(
        f"mirror: {len(mirror)} files, {size:,.0f} MB; taxon index: {result.rows:,} entries, "
        f"{result.bytes / 1024:,.0f} kB ({time.perf_counter() - started:.1f} s)"
    )
    started = time.perf_counter()
    build_summaries(mirror, layout, CONFIG)
    print(f"summaries (lineage, for the ranks' homonyms): {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    made = [ensure_table(f, layout, CONFIG) | chunk_crcs.ensure(f, layout, CONFIG) for f in mirror]
    computed = sum(made)
    print(
        f"emb digests and chunk crcs the gate keeps per file: {computed} computed "
        f"({time.perf_counter() - started:.1f} s), {len(mirror) - computed} kept"
    )


def load(workdir: Path) -> tuple[list[MirrorFile], pa.Table]:
    folder = workdir / "sample" / CONFIG
    sha256s = json.loads((workdir / "sha256s.json").read_text())
    mirror = [MirrorFile(p.name, sha256s[p.name], p) for p in sorted(folder.glob("*.parquet"))]
    return mirror, read_taxon_index(Layout(workdir / "home"), CONFIG)


def choose_slices(index: pa.Table) -> dict[str, str]:
    """Slice keys by role. A sample too small for a 100k-row family takes the taxon of any rank
    nearest 150k rows."""
    con = duck.cursor()
    con.register("idx", index)
    totals = "SELECT rank, value, sum(rows) AS n FROM idx GROUP BY ALL"

    def ranked(where: str, order: str) -> list[tuple[str, str, int]]:
        query = f"SELECT rank, value, n FROM ({totals}) WHERE {where} ORDER BY {order}, value"
        return [(r, v, int(n)) for r, v, n in con.execute(query).fetchall()]

    family = ranked("rank = 'family' AND n BETWEEN 100000 AND 200000", "abs(n - 150000)")
    if not family:
        family = ranked("rank <> 'kingdom'", "abs(n - 150000)")
        print(
            f"note: no family holds 100k-200k rows at this size; using "
            f"{family[0][0]}={family[0][1]} ({family[0][2]:,} rows)"
        )
    species = ranked("rank = 'species'", "abs(n - 2000)")[0][1]
    order = ranked("rank = 'order'", "n DESC")[0]
    kingdom = ranked("rank = 'kingdom'", "n DESC")[0]
    return {
        "family-sized": f"{family[0][0]}={family[0][1]}",
        "species-sized": f"species={species}",
        "largest order": f"order={order[1]}",
        "largest kingdom": f"kingdom={kingdom[1]}",
    }


def copy_filter(key: SliceKey, species_or: bool) -> tuple[str, list[str]]:
    """The copy's WHERE: the card's single-column shape (see the module's docstring)."""
    rank, value = key.conditions[-1]
    parts = split_binomial(value) if rank == "species" else None
    if len(key.conditions) == 1 and parts is not None and not species_or:
        where = f"{quote_ident('genus')} = ? AND {quote_ident('species')} IN (?, ?)"
        return where, [parts[0], parts[1], value]
    return to_sql_filter(key)


# --- the ways, each run in a child process ------------------------------------------------------


def run_way(way: str, key: SliceKey, workdir: Path, species_or: bool) -> Measure:
    """Run `way` once in this process (a fresh child) and measure it."""
    mirror, index = load(workdir)
    if way == UNSPLICED:
        splices.PAGE_SPLICES = False
    out = workdir / "out" / f"{way}.parquet"
    warm_up()
    before = _cpu()
    started = time.perf_counter()
    note = ""
    if way == "copy":
        where, params = copy_filter(key, species_or)
        glob = str(mirror[0].path.parent / "*.parquet")
        with duck.cursor() as con:
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{glob}') WHERE {where}) TO '{out}' "
                "(FORMAT parquet)",
                params,
            )
    elif way in ("ours", "checked", UNSPLICED):
        schema, rows = expected_schema(CONFIG), expected_count(key, index, mirror)

        def verify(path: Path) -> list[CheckResult]:
            return slice_checks(
                path,
                key,
                rows,
                schema,
                mirror,
                index,
                layout=Layout(workdir / "home"),
                config=CONFIG,
            )

        result = extract_slice(
            key, mirror, index, out, schema=schema, verify=verify if way == "checked" else None
        )
        note = (
            f"{result.row_groups_copied} of {result.row_groups_read} row groups copied whole, "
            f"{result.row_groups_spliced} spliced page by page"
        )
    else:
        floor(key, mirror, index, out, int(os.environ["BENCH_OUTPUT_BYTES"]))
    seconds, cpu = time.perf_counter() - started, _cpu() - before
    if way == "floor":
        return Measure(seconds, cpu, peak_rss_mb(), out.stat().st_size, 0, "-")
    meta = pq.read_metadata(out)
    emb = str(meta.schema.to_arrow_schema().field("emb").type)
    return Measure(seconds, cpu, peak_rss_mb(), out.stat().st_size, meta.num_rows, emb, note)


def floor(key: SliceKey, mirror: list[MirrorFile], index: pa.Table, out: Path, size: int) -> None:
    """Read the bytes of the row groups that hold the slice; write and fsync `size` bytes."""
    chunk = memoryview(bytearray(8 << 20))
    for scan in plan_scans(key, mirror, index):
        meta = pq.read_metadata(scan.file.path)
        with open(scan.file.path, "rb", buffering=0) as handle:
            for group in scan.row_groups:
                columns = [meta.row_group(group).column(c) for c in range(meta.num_columns)]
                handle.seek(min(c.dictionary_page_offset or c.data_page_offset for c in columns))
                left = sum(c.total_compressed_size for c in columns)
                while left > 0:
                    left -= handle.readinto(chunk[: min(left, len(chunk))]) or left
    with open(out, "wb") as handle:
        for written in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - written)])
        handle.flush()
        os.fsync(handle.fileno())


def warm_up() -> None:
    """What a long-lived worker has already paid: lazy imports and the DuckDB database."""
    import pyarrow.compute
    import pyarrow.dataset  # noqa: F401  (pq.read_table imports it on first use)

    duck.cursor().close()


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _cpu() -> float:
    """User + sys of this process's threads and of its children waited for (a rank's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class WorkerPeaks(threading.Thread):
    """The peak RSS of a rank's workers, each read from /proc every SAMPLE_S while they run
    (their ru_maxrss would not do: a process started by exec keeps its parent's peak in it,
    here the pass's, plan and index included)."""

    SAMPLE_S = 0.05

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()
        self.children = Path(f"/proc/self/task/{os.getpid()}/children")  # the main thread's

    def run(self) -> None:
        while not self.done.wait(self.SAMPLE_S):
            for pid in self.children.read_text().split():
                with contextlib.suppress(OSError, RuntimeError):  # ended since
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak_rss_mb(pid))

    def total_mb(self) -> float:
        """The workers' peaks added up (each the highest sampled), once they have ended."""
        self.done.set()
        self.join()
        return sum(self.peaks.values())


def measure(way: str, key: str, workdir: Path, species_or: bool, output_bytes: int = 0) -> Measure:
    """Run one way in a child process and return what it measured."""
    out = workdir / "out" / f"{way}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    os.sync()  # no way pays in its fsync for the writeback of the one before (the copy's)
    command = [sys.executable, __file__, "--child", way, key, "--workdir", str(workdir)]
    done = subprocess.run(
        [*command, *(["--species-or"] if species_or else [])],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_OUTPUT_BYTES": str(output_bytes)},
    )
    return Measure(**json.loads(done.stdout.strip().splitlines()[-1]))


# --- a whole rank ------------------------------------------------------------------------------


def clear_rank_outputs(workdir: Path, way: str) -> None:
    """Remove every whole-rank output (each pass builds every slice), then, unless `way` is the
    floor (one file), wait until the kernel stops skipping the freed inodes.

    ext4 without a journal (this machine's disk) skips inodes freed in the last
    `dirty_expire_centisecs` when it allocates one (`recently_deleted`), walking past them with
    the folder locked: a pass started right after the one before was removed (7,000 files) paid
    ~4% more CPU for it. Users do not remove a rank's slices before a pass."""
    layout = Layout(workdir / "home")
    stale = [layout.slices_dir(CONFIG), layout.slice_records_dir(CONFIG)]
    stale += [workdir / "out" / w for w in RANK_WAYS]
    removed = [path for path in stale if path.exists()]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if removed and way != "rank-floor":
        time.sleep(_inode_reuse_delay())


def _inode_reuse_delay() -> float:
    """Seconds after which ext4 reuses a freed inode without looking twice (1 s spare)."""
    try:
        return int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100 + 1
    except (OSError, ValueError):
        return 31.0


def run_rank_way(way: str, rank: str, workdir: Path, workers: int) -> Measure:
    """Run a whole-rank `way` once in this process (a fresh child) and measure it; ours over
    `workers` processes (their CPU and RSS counted)."""
    mirror, index = load(workdir)
    layout = Layout(workdir / "home")
    out = layout.slices_dir(CONFIG)
    clear_rank_outputs(workdir, way)
    warm_up()
    before, started = _cpu(), time.perf_counter()
    note, sampled = "", WorkerPeaks()
    if way == "rank-copy":
        glob = str(mirror[0].path.parent / "*.parquet")
        out = workdir / "out" / "rank-copy"
        out.parent.mkdir(parents=True, exist_ok=True)  # DuckDB makes `out` alone
        with duck.cursor() as con:
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{glob}')) TO '{out}' "
                f"(FORMAT parquet, PARTITION_BY ({quote_ident(rank)}))"
            )
    elif way == "rank-floor":
        rank_floor(mirror, workdir / "out" / "rank-floor", int(os.environ["BENCH_OUTPUT_BYTES"]))
        out = workdir / "out" / "rank-floor"
    else:
        lineage = read_summary(layout, CONFIG, "lineage")
        plan = plan_rank(rank, index, lineage, mirror)
        sampled.start()
        result = publish_rank(
            plan, mirror, schema=expected_schema(CONFIG), layout=layout, config=CONFIG,
            commit="bench", generation="bench", checked=way == "rank-checked", workers=workers,
        )  # fmt: skip
        note = f"{len(result.built):,} slices, {workers} process{'es' if workers > 1 else ''}"
    seconds, cpu = time.perf_counter() - started, _cpu() - before
    rss = peak_rss_mb() + (sampled.total_mb() if sampled.is_alive() else 0.0)
    parts = sorted(out.rglob("*.parquet")) if out.is_dir() else [out]
    rows = sum(pq.read_metadata(p).num_rows for p in parts if p.suffix == ".parquet")
    emb = str(pq.read_schema(parts[0]).field("emb").type) if way != "rank-floor" else "-"
    note = note or f"{len(parts):,} files"
    size = sum(p.stat().st_size for p in parts)
    return Measure(seconds, cpu, rss, size, rows, emb, note)


def rank_floor(mirror: list[MirrorFile], out: Path, size: int) -> None:
    """Read every byte of the mirror once; write and fsync `size` bytes."""
    chunk = memoryview(bytearray(8 << 20))
    for file in mirror:
        with open(file.path, "rb", buffering=0) as handle:
            while handle.readinto(chunk):
                pass
    with open(out, "wb") as handle:
        for written in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - written)])
        handle.flush()
        os.fsync(handle.fileno())


def dagster_bookkeeping(partitions: int) -> Measure:
    """`partitions` dynamic partitions of an asset that does nothing, materialized in one
    single-run backfill on a SQLite instance: Dagster's cost before any byte moves."""
    import dagster as dg

    values = dg.DynamicPartitionsDefinition(name="values")

    @dg.asset(partitions_def=values, backfill_policy=dg.BackfillPolicy.single_run())
    def noop() -> None:
        """Nothing: what is left is Dagster's bookkeeping."""

    with tempfile.TemporaryDirectory() as home:
        instance = dg.DagsterInstance.local_temp(home)
        keys = [f"family=F{i:06d}" for i in range(partitions)]
        instance.add_dynamic_partitions("values", keys)
        job = dg.Definitions(assets=[noop], jobs=[dg.define_asset_job("noop_job")])
        before, started = _cpu(), time.perf_counter()
        result = job.resolve_job_def("noop_job").execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        seconds, cpu = time.perf_counter() - started, _cpu() - before
        done = instance.fetch_materializations(noop.key, limit=partitions + 1).records
        assert result.success and len(done) == partitions, "not every partition materialized"
    return Measure(seconds, cpu, peak_rss_mb(), 0, partitions, "-", f"{partitions:,} partitions")


def bench_rank(rank: str, workdir: Path, runs: int, partitions: int) -> dict[str, Measure]:
    """The whole-rank ways, `runs` rounds interleaved, and Dagster's bookkeeping once."""
    med = rounds(RANK_WAYS, rank, workdir, runs, False, "rank-ours")
    med["dagster"] = measure("dagster", str(partitions), workdir, False)
    copy = med["rank-copy"]
    print(f"\nwhole rank: {rank} — {med['rank-ours'].rows:,} rows; ours: {med['rank-ours'].note}")
    print(
        f"  {'way':<13} {'wall s':>8} {'cpu s':>8} {'copy/way wall':>14} {'copy/way cpu':>13} "
        f"{'peak RSS':>9} {'output':>10}  emb type"
    )
    for way, m in med.items():
        print(
            f"  {way:<13} {m.seconds:8.2f} {m.cpu:8.2f} {copy.seconds / m.seconds:13.2f}x "
            f"{copy.cpu / max(m.cpu, 1e-9):12.2f}x {m.rss_mb:7.0f}MB "
            f"{m.bytes / 2**20:8.1f}MB  {m.emb_type} ({m.note})"
        )
    return med


def rank_verdicts(rank: str, med: dict[str, Measure]) -> None:
    copy, ours, checked = med["rank-copy"], med["rank-ours"], med["rank-checked"]
    floor, dagster = med["rank-floor"], med["dagster"]
    slices = int(ours.note.split()[0].replace(",", ""))
    print(f"\nwhole rank ({rank}, {slices:,} slices):")
    for name, m in (("ours", ours), ("checked", checked)):
        wall, cpu = copy.seconds / m.seconds, copy.cpu / m.cpu
        print(
            f"  {name:<8} {wall:5.2f}x wall, {cpu:5.2f}x cpu faster than DuckDB's PARTITION_BY "
            f"copy (target {RANK_COPY_TARGET}x): {'met' if wall >= RANK_COPY_TARGET else 'MISSED'}"
        )
    of_floor = ours.seconds / floor.seconds
    print(
        f"  ours     {of_floor:5.2f}x the floor's wall, {ours.cpu / floor.cpu:5.2f}x its cpu "
        f"(target within {RANK_FLOOR_TARGET}x): {'met' if of_floor <= RANK_FLOOR_TARGET else 'MISSED'}"
    )
    print(
        f"  peak RSS {checked.rss_mb:,.0f} MB checked, {ours.rss_mb:,.0f} MB ours (target < "
        f"{RSS_LIMIT_MB} MB): {'met' if max(checked.rss_mb, ours.rss_mb) < RSS_LIMIT_MB else 'MISSED'}"
    )
    print(
        f"  emb type kept exact: {'yes' if ours.emb_type.startswith('fixed_size_list') else 'NO'} "
        f"(the copy writes {copy.emb_type}); rows: ours {ours.rows:,}, copy {copy.rows:,} "
        "(the copy also writes the NULL-family rows)"
    )
    per_partition = dagster.seconds / dagster.rows
    per_value = checked.seconds / max(slices, 1)
    share = per_partition / per_value
    print(
        f"  Dagster: {per_partition * 1000:.1f} ms wall ({dagster.cpu / dagster.rows * 1000:.1f} "
        f"ms cpu) per dynamic partition ({dagster.note}, one run, SQLite); the data work is "
        f"{per_value * 1000:.1f} ms per value (checked): Dagster would add {share:.0%} "
        f"(limit {DAGSTER_SHARE_LIMIT:.0%}): "
        + (
            "one partition per value"
            if share <= DAGSTER_SHARE_LIMIT
            else "a rank is one materialization"
        )
    )


# --- the report -------------------------------------------------------------------------------


def emb_gain(path: Path) -> float:
    """How much ZSTD at our level would shrink the `emb` values of the slice's first row group."""
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows == 0:
        return 0.0
    values = parquet.read_row_group(0, columns=["emb"])["emb"].combine_chunks().flatten()
    width = values.type.byte_width
    raw = values.buffers()[1][values.offset * width : (values.offset + len(values)) * width]
    return raw.size / pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(raw).size - 1


def bench_slice(
    role: str, key: str, workdir: Path, runs: int, species_or: bool, unspliced: bool = False
) -> dict[str, Measure]:
    ways: tuple[str, ...] = WAYS if role != "largest kingdom" else ("ours", "checked", "floor")
    ways += (UNSPLICED,) if unspliced and role != "largest kingdom" else ()
    med = rounds(ways, key, workdir, runs, species_or, "ours")
    base = med.get("copy")
    print(f"\n{role}: {key} — {med['ours'].rows:,} rows; ours: {med['ours'].note}")
    print(
        f"  {'way':<6} {'wall s':>8} {'cpu s':>8} {'copy/way wall':>14} {'copy/way cpu':>13} "
        f"{'peak RSS':>9} {'output':>10}  emb type"
    )
    for way, m in med.items():
        ratios = (
            f"{base.seconds / m.seconds:13.2f}x {base.cpu / max(m.cpu, 1e-9):12.2f}x"
            if base
            else f"{'-':>14} {'-':>13}"
        )
        print(
            f"  {way:<6} {m.seconds:8.2f} {m.cpu:8.2f} {ratios} {m.rss_mb:7.0f}MB "
            f"{m.bytes / 2**20:8.1f}MB  {m.emb_type}"
        )
    gain = emb_gain(workdir / "out" / "ours.parquet")
    sizes = f"; our file is {med['ours'].bytes / base.bytes:.0%} of the copy's" if base else ""
    print(
        f"  emb: ZSTD level {ZSTD_LEVEL} would shrink its bytes by {gain:.1%}: rows we encode keep "
        f"it {'compressed' if gain >= EMB_MIN_GAIN else 'uncompressed'} (we compress from "
        f"{EMB_MIN_GAIN:.0%}), copied row groups keep the mirror's ZSTD{sizes}"
    )
    if base:
        assert med["ours"].rows == base.rows, "ours and the copy selected different rows"
    assert med["checked"].rows == med["ours"].rows, "the checked way selected other rows"
    if UNSPLICED in med:
        assert med[UNSPLICED].rows == med["ours"].rows, "unspliced selected other rows"
    return med


def rounds(
    ways: tuple[str, ...], key: str, workdir: Path, runs: int, species_or: bool, ours: str
) -> dict[str, Measure]:
    """Medians of `runs` rounds of `ways`, interleaved; a floor way writes as many bytes as
    `ours` did in its round (`ours` comes before it in `ways`)."""
    results: dict[str, list[Measure]] = {way: [] for way in ways}
    for _ in range(runs):
        for way in ways:
            size = results[ours][-1].bytes if way.endswith("floor") else 0
            results[way].append(measure(way, key, workdir, species_or, size))
    return {way: _median(measures) for way, measures in results.items()}


def _median(measures: list[Measure]) -> Measure:
    def middle(name: str) -> Any:
        return statistics.median(getattr(m, name) for m in measures)

    first = measures[0]
    return Measure(
        middle("seconds"), middle("cpu"), middle("rss_mb"), first.bytes, first.rows,
        first.emb_type, first.note,
    )  # fmt: skip


def verdicts(rows: dict[str, dict[str, Measure]]) -> None:
    print("\ntargets:")
    for role, med in rows.items():
        ours = med["ours"]
        if role in TARGETS:
            copy = med["copy"]
            wall, cpu, need = copy.seconds / ours.seconds, copy.cpu / ours.cpu, TARGETS[role]
            print(
                f"  {role:<16} {wall:5.2f}x wall, {cpu:5.2f}x cpu faster than the copy "
                f"(target {need}x): {'met' if wall >= need else 'MISSED'}"
            )
            wall_need, cpu_need = FULL_SCALE_TARGETS[role]
            met = wall >= wall_need and (cpu_need is None or cpu >= cpu_need)
            print(
                f"  {role:<16} full-scale target {wall_need}x wall"
                + (f", {cpu_need}x cpu" if cpu_need else "")
                + f": {'met' if met else 'MISSED'}"
            )
        if role in FLOOR_TARGETS and "floor" in med:
            of_floor, limit = ours.seconds / med["floor"].seconds, FLOOR_TARGETS[role]
            print(
                f"  {role:<16} ours {of_floor:5.2f}x the floor's wall (target within {limit}x): "
                f"{'met' if of_floor <= limit else 'MISSED'}"
            )
        checks = med["checked"].cpu - ours.cpu
        print(
            f"  {role:<16} the blocking checks cost {checks:5.2f} s cpu "
            f"({checks / max(ours.bytes / 2**30, 1e-9):5.1f} s per GB of slice), "
            f"{med['checked'].cpu / ours.cpu:4.2f}x ours' cpu"
            + (
                f"; checked: {med['copy'].seconds / med['checked'].seconds:5.2f}x wall faster "
                "than the copy"
                if "copy" in med
                else ""
            )
        )
        if UNSPLICED in med:
            before, floor = med[UNSPLICED], med["floor"]
            print(
                f"  {role:<16} page-level splicing: ours {before.seconds / ours.seconds:5.2f}x "
                f"wall, {before.cpu / ours.cpu:5.2f}x cpu faster than unspliced; ours "
                f"{ours.seconds / floor.seconds:5.2f}x the floor's wall (unspliced "
                f"{before.seconds / floor.seconds:5.2f}x)"
            )
        if role in RSS_ROLES:
            print(
                f"  {role:<16} peak RSS {ours.rss_mb:,.0f} MB for {ours.bytes / 2**20:,.0f} MB out "
                f"(target < {RSS_LIMIT_MB} MB): {'met' if ours.rss_mb < RSS_LIMIT_MB else 'MISSED'}"
            )
    exact = all(
        m["ours"].emb_type.startswith("fixed_size_list<element: halffloat>") for m in rows.values()
    )
    copies = {m["copy"].emb_type for m in rows.values() if "copy" in m}
    if copies:  # none when only the whole rank ran: it says so itself
        print(
            f"  emb type kept exact in every slice: {'yes' if exact else 'NO'} "
            f"(the copy writes {', '.join(copies)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_800_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-size", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the mirror here (reused if it matches)")
    parser.add_argument(
        "--species-or",
        action="store_true",
        help="give the copy our species filter (binomial OR genus + epithet) instead",
    )
    parser.add_argument(
        "--unspliced",
        action="store_true",
        help="also run ours without page-level splicing (before/after in one run)",
    )
    parser.add_argument(
        "--roles",
        help="comma-separated roles to run (default: all), e.g. 'family-sized,whole rank'",
    )
    parser.add_argument("--rank", default="family", help="the whole rank to publish in one pass")
    parser.add_argument("--no-rank", dest="rank", action="store_const", const=None)
    parser.add_argument("--rank-runs", type=int, default=1)
    parser.add_argument(
        "--rank-workers",
        type=int,
        default=Settings.from_env().rank_workers,
        help="processes of our rank pass (default: TOL_RANK_WORKERS, as the asset runs it)",
    )
    parser.add_argument("--dagster-partitions", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("WAY", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        way, key = args.child
        if way == "dagster":
            measured = dagster_bookkeeping(int(key))
        elif way in RANK_WAYS:
            measured = run_rank_way(way, key, args.workdir, args.rank_workers)
        else:
            measured = run_way(way, parse_slice_key(key), args.workdir, args.species_or)
        print(json.dumps(asdict(measured)))
        return

    os.environ["TOL_RANK_WORKERS"] = str(args.rank_workers)  # the children's default
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tol-bench-slices-"))
    try:
        prepare(workdir, args.rows, args.files, args.row_group_size, args.seed)
        keys = choose_slices(load(workdir)[1])
        roles = args.roles.split(",") if args.roles else list(keys)
        rows = {
            role: bench_slice(role, key, workdir, args.runs, args.species_or, args.unspliced)
            for role, key in keys.items()
            if role in roles
        }
        ranked = None
        if args.rank and (not args.roles or "whole rank" in roles):
            ranked = bench_rank(args.rank, workdir, args.rank_runs, args.dagster_partitions)
        verdicts(rows)
        if ranked is not None:
            rank_verdicts(args.rank, ranked)
    finally:
        shutil.rmtree(workdir / "out", ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Summary and taxon-index benchmark (issue 4, item 8): one run on a generated sample.

Measured in the same run, interleaved, medians of `--runs` rounds, printed beside the targets:

- brute force: the DuckDB queries over the whole glob that produce the same six summary tables
  (on a warm connection), each written to parquet;
- full rebuild: `build_summaries(force=True)`, every file's part recomputed;
- incremental update: one file given a new sha256 (what a changed file looks like: no part,
  and no published segment, is keyed by it), then `build_summaries`;
- the same full/incremental pair for the taxon index, its size, and a count served from it;
- the same pair for the centroids (they read `emb`: the sums of each file's rows per lineage).

Targets: full rebuild no slower than brute force; incremental at most 2/N of a full rebuild
(issue 4), and at most 0.05 from 40 files up (issue 11: 2/N at 8 files, 0.05 at 666).

    .venv/bin/python bench/summaries.py                         # 400k rows in 8 files
    .venv/bin/python bench/summaries.py --rows 2800000 --dim 8  # the PERF.md probe's rows

Summaries never read `emb`, so `--dim 8` gives the same work on much smaller files. The sample
is generated in a temporary folder; `--workdir DIR` keeps it there for the next run.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster import duck
from tol_dagster.derived.centroids import build_centroids
from tol_dagster.derived.summaries import VALUE_COLUMNS, build_summaries
from tol_dagster.derived.taxon_index import build_taxon_index, count, read_taxon_index
from tol_dagster.devtools.sample import build_sample
from tol_dagster.schema import DEFAULT_CONFIG, RANKS, quote_ident
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.verified import note_verified

SEED = 5


def brute_force(files: list[MirrorFile], out: Path) -> None:
    """The six summary tables straight from the glob, as a user would write them."""
    paths = [str(f.path) for f in files]
    lineage = ", ".join(quote_ident(c) for c in ("source_dataset", *RANKS))
    ranks = [quote_ident(r) for r in RANKS]
    sets = ", ".join(f"(source_dataset, {', '.join(ranks[: i + 1])})" for i in range(len(ranks)))
    queries = {
        "lineage": f"SELECT {lineage}, count(*) AS images FROM read_parquet(?) GROUP BY ALL ORDER BY ALL",
        "rank_counts": f"SELECT {lineage}, count(*) AS images FROM read_parquet(?) "
        f"GROUP BY GROUPING SETS ({sets}) ORDER BY ALL",
        **{
            name: f"SELECT source_dataset, {quote_ident(col)} AS value, count(*) AS images "
            "FROM read_parquet(?) GROUP BY ALL ORDER BY ALL"
            for name, col in VALUE_COLUMNS.items()
        },
        "files": "SELECT * FROM parquet_file_metadata(?)",
    }
    with duck.cursor() as con:
        for name, sql in queries.items():
            pq.write_table(con.sql(sql, params=[paths]).to_arrow_table(), out / f"{name}.parquet")


def change_one(files: list[MirrorFile], layout: Layout, config: str) -> None:
    """Make the middle file look changed upstream: a new sha256, so that no cached part and no
    published segment keyed by its content is found (its bytes stay; only the work counts),
    noted as verified as the gate notes a new file (else the build would hash it, and find
    that its bytes do not have that sha256)."""
    middle = files[len(files) // 2]
    changed = MirrorFile(middle.name, secrets.token_hex(32), middle.path)
    note_verified(layout, config, changed.sha256, changed.path.stat(), time.time())
    files[len(files) // 2] = changed


def timed(rounds: int, cases: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each case, the cases interleaved round by round.

    CPU time (all threads of this process) moves far less than wall time when the machine is
    shared with other work, so both are printed.
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            case()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs))
        for name, pairs in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-size", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=None, help="embedding width (default: config's)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep the sample here and reuse it")
    args = parser.parse_args()
    config = DEFAULT_CONFIG
    with tempfile.TemporaryDirectory(prefix="tol-bench-summaries-") as tmp:
        work = Path(tmp)
        sample = args.workdir or work / "sample"
        size = f"{args.rows}-{args.files}-{args.row_group_size}-{args.dim}"
        if not (sample / f".size-{size}").exists():
            build_sample(
                sample,
                rows=args.rows,
                files=args.files,
                seed=SEED,
                dim=args.dim,
                row_group_size=args.row_group_size,
            )
            (sample / f".size-{size}").touch()
        folder = sample / config
        files = [MirrorFile(p.name, sha256_file(p), p) for p in sorted(folder.glob("*.parquet"))]
        layout = Layout(work / "home")
        (work / "brute").mkdir()
        build_summaries(files, layout, config)
        build_taxon_index(files, layout, config)
        dim = pq.read_schema(files[0].path).field("emb").type.list_size
        build_centroids(files, layout, config, dim)

        def summaries_incremental() -> None:
            change_one(files, layout, config)
            build_summaries(files, layout, config)

        def index_incremental() -> None:
            change_one(files, layout, config)
            build_taxon_index(files, layout, config)

        def centroids_incremental() -> None:
            change_one(files, layout, config)
            build_centroids(files, layout, config, dim)

        t = timed(
            args.runs,
            {
                "brute": lambda: brute_force(files, work / "brute"),
                "full": lambda: build_summaries(files, layout, config, force=True),
                "incremental": summaries_incremental,
                "index_full": lambda: build_taxon_index(files, layout, config, force=True),
                "index_incremental": index_incremental,
                "centroids_full": lambda: build_centroids(files, layout, config, dim, force=True),
                "centroids_incremental": centroids_incremental,
            },
        )
        index = read_taxon_index(layout, config)
        families = index.filter(pc.equal(index["rank"], "family"))
        family = families["value"][int(families["rows"].to_numpy().argmax())].as_py()
        start = time.perf_counter()
        count(index, "family", family)
        count_ms = (time.perf_counter() - start) * 1e3
        index_bytes = layout.taxon_index_path(config).stat().st_size
    n = len(files)
    incremental = max(2 / n, 0.05)  # issue 11: 2/N at 8 files, 0.05 at 666
    print(
        f"{args.rows:,} rows in {n} files, row groups of {args.row_group_size:,}, {args.runs} rounds"
    )
    print(f"{'':26}{'wall s':>8}{'ratio':>7}{'cpu s':>8}{'ratio':>7}  target")
    lines = [
        ("brute-force queries", "brute", None, 0.0),
        ("summaries, full", "full", "brute", 1.0),
        ("summaries, incremental", "incremental", "full", incremental),
        ("taxon index, full", "index_full", None, 0.0),
        ("taxon index, incremental", "index_incremental", "index_full", incremental),
        ("centroids, full", "centroids_full", None, 0.0),
        ("centroids, incremental", "centroids_incremental", "centroids_full", incremental),
    ]
    for label, case, baseline, target in lines:
        wall, cpu = t[case]
        if baseline is None:
            print(f"{label:26}{wall:>8.3f}{'':>7}{cpu:>8.3f}")
            continue
        by_wall, by_cpu = wall / t[baseline][0], cpu / t[baseline][1]
        verdict = "ok" if by_wall <= target else "MISSED"
        print(
            f"{label:26}{wall:>8.3f}{by_wall:>7.2f}{cpu:>8.3f}{by_cpu:>7.2f}  <= {target:.2f} {verdict}"
        )
    print(
        f"taxon index: {index.num_rows:,} entries, {index_bytes / 1e3:.0f} kB; a family count: {count_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()

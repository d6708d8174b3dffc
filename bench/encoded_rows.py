"""CPU per row group a slice encodes (`slices.write.encoded_columns`), and what parsing its
footer whole would cost.

A whole rank writes thousands of slices, and most of their row groups are rows encoded here: the
metadata columns written by pyarrow, then that footer parsed in Python to splice its column
chunks (`page_splice.whole_columns`, in `parquet.list_table`), and `emb` by `list_encode`. Each
round encodes row groups of 300 to 1,300 rows cut from a generated mirror file (the sizes a
family's partial row groups have). Rounds alternate, in one process, the footer parsed as the
code does (`footer.SPLICED_ROWS_SHAPE`: schema, key-value metadata, encodings and paths kept as
bytes) and parsed like any footer (`FOOTER_SHAPE`); the medians and their ratio are printed.
Across checkouts (`PYTHONPATH=...`), only the first figure compares, and this machine's drift
from one process to the next is larger than that ratio: alternate in one process.

    .venv/bin/python bench/encoded_rows.py [--workdir DIR] [--rounds N]

`--workdir DIR` keeps the generated file (~60 MB) for the next run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import tol_dagster
from tol_dagster.devtools.sample import build_sample
from tol_dagster.parquet import list_table
from tol_dagster.parquet.footer import FOOTER_SHAPE, SPLICED_ROWS_SHAPE
from tol_dagster.schema import DEFAULT_CONFIG, expected_schema
from tol_dagster.slices import write

SAMPLE = {"rows": 40_000, "files": 1, "seed": 13, "row_group_size": 50_000}


def row_groups(path: Path) -> list[pa.Table]:
    """Tables of 300 to 1,300 consecutive rows of the file, every column."""
    table = pq.read_table(path)
    return [table.slice(start, 300 + start % 1_001) for start in range(0, 38_000, 800)]


def round_ms(tables: list[pa.Table], codec: str) -> float:
    """CPU milliseconds per row group encoded, over all `tables`."""
    schema = expected_schema(DEFAULT_CONFIG)
    start = time.process_time()
    for table in tables:
        write.encoded_columns(table, schema, codec)
    return (time.process_time() - start) / len(tables) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep the generated file here")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tol-bench-encoded-") as tmp:
        sample = args.workdir or Path(tmp) / "sample"
        if not list(sample.glob(f"{DEFAULT_CONFIG}/*.parquet")):
            build_sample(sample, **SAMPLE)  # type: ignore[arg-type]
        tables = row_groups(sorted(sample.glob(f"{DEFAULT_CONFIG}/*.parquet"))[0])
    round_ms(tables, "none")  # warm-up: imports and caches
    rounds: dict[str, list[float]] = {"lean": [], "whole": []}
    for _ in range(args.rounds):
        for name, shape in (("lean", SPLICED_ROWS_SHAPE), ("whole", FOOTER_SHAPE)):
            list_table.SPLICED_ROWS_SHAPE = shape
            rounds[name].append(round_ms(tables, "none"))
    list_table.SPLICED_ROWS_SHAPE = SPLICED_ROWS_SHAPE
    lean, whole = (statistics.median(rounds[name]) for name in ("lean", "whole"))
    checkout = Path(tol_dagster.__file__).resolve().parents[1]
    print(
        f"encoded row groups: {lean:.3f} CPU ms each (median of {args.rounds} rounds of "
        f"{len(tables)}; code of {checkout}); their footers parsed whole: {whole:.3f} ms "
        f"({lean / whole:.2f} of it, alternated round by round)"
    )


if __name__ == "__main__":
    main()

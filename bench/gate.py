"""The gate's CPU per MB of parquet (issue 11, item 3), for A/B runs of two checkouts.

`inspect_file` on each file as `resync.facts` runs it (the sha256 re-hash included, uuid hashes
and `emb` digests written), after one warm-up file, CPU time of this process:

    .venv/bin/python bench/gate.py FILE...                                  # this checkout
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/gate.py FILE...   # another one

Alternate the two commands a few times on the same files: on a shared machine only ratios
measured close together mean anything. Without FILE, one upstream-sized file (350,000 rows,
~509 MB) is generated into a temporary folder first (~20 s; `--workdir DIR` keeps it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import great_expectations  # noqa: F401  (imported once per process, as a sync does)

import tol_dagster
from tol_dagster.devtools.sample import build_sample
from tol_dagster.schema import DEFAULT_CONFIG, emb_bounds, expected_schema
from tol_dagster.store.durable import fsync_dir
from tol_dagster.validation.file_facts import inspect_file

SAMPLE = {"rows": 350_000, "files": 1, "seed": 11, "row_group_size": 50_000}


def gate_cpu(path: Path, work: Path) -> float:
    """CPU seconds of one `inspect_file` of `path`; AssertionError if the file fails it."""
    start = time.process_time()
    facts = inspect_file(
        path,
        expected_sha256=None,
        actual_sha256=None,
        expected_schema=expected_schema(DEFAULT_CONFIG),
        uuid_hashes_path=work / "uuid_hashes.npy",
        emb_bounds=emb_bounds(DEFAULT_CONFIG),
        emb_digests_path=work / "emb_digests.npy",
    )
    fsync_dir(work)  # as `resync.facts` does after, with the facts it writes there
    cpu = time.process_time() - start
    assert facts.passed, [result.message for result in facts.failures()]
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep the generated file here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tol-bench-gate-") as tmp:
        work = Path(tmp)
        files = args.files
        if not files:
            sample = args.workdir or work / "sample"
            if not list(sample.glob(f"{DEFAULT_CONFIG}/*.parquet")):
                build_sample(sample, **SAMPLE)  # type: ignore[arg-type]
            files = sorted(sample.glob(f"{DEFAULT_CONFIG}/*.parquet"))
        gate_cpu(files[0], work)  # warm-up: imports, caches, page cache
        cpu = sum(gate_cpu(path, work) for path in files)
        size = sum(path.stat().st_size for path in files)
    checkout = Path(tol_dagster.__file__).resolve().parents[1]
    print(
        f"gate, MB of parquet per CPU second: {size / 1e6 / cpu:,.0f} (target >= 400; "
        f"{cpu:.2f} CPU s for {size / 1e6:,.0f} MB in {len(files)} files; code of {checkout})"
    )


if __name__ == "__main__":
    main()

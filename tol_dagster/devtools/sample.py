"""A TreeOfLife-200M-Embeddings-shaped sample repo: sorted parquet files plus a dataset card.

Everything downstream (the local Hub, the mirror, the gate, slices, benchmarks) stands on this,
so it copies what matters about the real data: the exact schema and global
sort, upstream's row-group, compression and page-index settings, the source and kingdom shares,
Zipf tails, NULL holes mid-hierarchy, dirty values, awkward names, and embeddings whose norms and
cosine structure match BioCLIP 2's. Rows depend only on (rows, seed); a second config built into
the same folder holds the same uuids in the same order, as upstream configs do.

Per row only a few integers stay in memory (~70 bytes a row); strings and embeddings are made
one row group at a time (the next one in a worker thread while this one is written), so the
rest of the memory is bounded by the row-group size.

The leaf taxa come from `sample_taxonomy`, the rows in sort order from `sample_rows` (their
string columns from `sample_columns`), the vectors from `sample_embeddings`; this module cuts
the rows into files and row groups, writes them with upstream's settings, and writes the card.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.devtools.sample_embeddings import Embedder
from tol_dagster.devtools.sample_rows import SampleRows
from tol_dagster.devtools.sample_taxonomy import Taxa
from tol_dagster.errors import SettingsError
from tol_dagster.hub import card
from tol_dagster.schema import (
    DEFAULT_CONFIG,
    METADATA_COLUMNS,
    STRING_COLUMNS,
    arrow_schema,
    config_dim,
)
from tol_dagster.store import durable

#: `make demo`'s sample: builds in seconds, and every README taxon (Felidae, Puma concolor,
#: Primates, Nymphalidae, Danaus plexippus) spans several files and row groups.
DEMO_SAMPLE: dict[str, int] = {"rows": 120_000, "files": 4, "seed": 42, "row_group_size": 5_000}

#: Taxa the README uses as examples: (rank, value) pairs, checked by the tests.
README_TAXA: tuple[tuple[str, str], ...] = (
    ("family", "Felidae"),
    ("species", "Puma concolor"),
    ("order", "Primates"),
    ("family", "Nymphalidae"),
    ("species", "Danaus plexippus"),
)

ZSTD_LEVEL = 3


@dataclass(frozen=True)
class SampleReport:
    """What `build_sample` wrote and how fast."""

    config: str
    rows: int
    files: list[Path]
    bytes: int
    seconds: float
    rows_per_second: float


def build_sample(
    out: Path,
    *,
    rows: int,
    files: int,
    seed: int,
    config: str = DEFAULT_CONFIG,
    dim: int | None = None,
    row_group_size: int = 50_000,
) -> SampleReport:
    """Write `out/<config>/train-0000i-of-0000K.parquet` and add `config` to `out/README.md`.

    Same arguments give the same bytes. The table's content depends on `rows`, `seed`,
    `config` and `dim` only (`files` and `row_group_size` change the layout, not the rows), and
    uuids and metadata on `rows` and `seed` only, so configs in one folder align by uuid.
    """
    started = time.perf_counter()
    out = Path(out)
    dim = config_dim(config) if dim is None else dim
    _check_arguments(out, rows=rows, files=files, dim=dim, row_group_size=row_group_size)
    existing = _read_card(out)
    taxa = Taxa.build(seed, rows)
    meta = SampleRows.build(taxa, rows=rows, seed=seed)
    _check_alignment(out, existing, config, rows, meta.uuid(0))
    embedder = Embedder(taxa, seed=seed, config=config, dim=dim)

    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).round().astype(np.int64).tolist()
    per_file = [
        [(lo, min(lo + row_group_size, stop)) for lo in range(start, stop, row_group_size)]
        for start, stop in itertools.pairwise(bounds)
    ]
    paths = [folder / f"train-{index:05d}-of-{files:05d}.parquet" for index in range(files)]
    all_chunks = [chunk for chunks in per_file for chunk in chunks]
    with contextlib.closing(_row_group_tables(meta, embedder, all_chunks)) as tables:
        for path, chunks in zip(paths, per_file, strict=True):
            _write_file(path, dim, itertools.islice(tables, len(chunks)), row_group_size)
    for stale in sorted(set(folder.glob("train-*.parquet")) - set(paths)):
        stale.unlink()

    front = card.with_config(existing, config, num_examples=rows)
    front.setdefault("pretty_name", "TreeOfLife-200M Embeddings (generated sample)")
    # Whole or not at all: a Hub serving the folder never sees half a card.
    durable.write_atomic(out / "README.md", card.render_card(front, _card_body(front)).encode())

    seconds = time.perf_counter() - started
    return SampleReport(
        config=config,
        rows=rows,
        files=paths,
        bytes=sum(p.stat().st_size for p in paths),
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else float("inf"),
    )


def _check_arguments(out: Path, *, rows: int, files: int, dim: int, row_group_size: int) -> None:
    if rows < 1 or files < 1 or rows < files:
        raise SettingsError(f"sample {out}: need rows >= files >= 1, got rows={rows} files={files}")
    if dim < 1:
        raise SettingsError(f"sample {out}: --dim must be positive, got {dim}")
    if row_group_size < 1:
        raise SettingsError(
            f"sample {out}: --row-group-size must be positive, got {row_group_size}"
        )


def _read_card(out: Path) -> dict[str, Any]:
    path = out / "README.md"
    if not path.exists():
        return {}
    return card.parse_card(path.read_text("utf-8"), source=str(path))


def _check_alignment(
    out: Path, existing: dict[str, Any], config: str, rows: int, first_uuid: str
) -> None:
    """Configs in one folder must align 1:1 by uuid, so they must have been built alike."""
    for other in card.config_names(existing):
        files = sorted((out / other).glob("train-*.parquet"))
        if other == config or not files:
            continue
        other_rows = card.expected_rows(existing, other)
        if other_rows is not None and other_rows != rows:
            raise SettingsError(
                f"sample {out}: config {other} holds {other_rows} rows but {config} would hold "
                f"{rows}; configs in one repo align 1:1 by uuid: build with --rows {other_rows} "
                "and the same --seed, or into an empty folder"
            )
        first = pq.ParquetFile(files[0]).read_row_group(0, columns=["uuid"]).column(0)[0]
        if first.as_py() != first_uuid:
            raise SettingsError(
                f"sample {out}: config {other} was built with another --seed, so {config} would "
                "not align with it by uuid; use the same --seed, or build into an empty folder"
            )


def _card_body(front: dict[str, Any]) -> str:
    lines = [
        "",
        "# TreeOfLife-200M Embeddings (generated sample)",
        "",
        "Generated by `tol-dagster sample build` for development and tests. It has the layout,",
        "schema, sort order and parquet settings of `imageomics/TreeOfLife-200M-Embeddings`, with",
        "made-up rows and vectors: do not use it for science.",
        "",
        "| config | rows |",
        "|---|---|",
    ]
    for name in card.config_names(front):
        lines.append(f"| {name} | {card.expected_rows(front, name)} |")
    return "\n".join(lines) + "\n"


# --- writing -------------------------------------------------------------------------------


def _row_group_tables(
    meta: SampleRows, embedder: Embedder, chunks: Sequence[tuple[int, int]]
) -> Generator[pa.Table]:
    """Row groups in order; the next one is built in a worker thread while this one is written
    (numpy's generators and parquet encoding release the GIL)."""

    def make(group: int) -> pa.Table:
        lo, hi = chunks[group]
        return meta.table(lo, hi, embedder.vectors(meta.leaf[lo:hi], lo))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sample") as pool:
        pending = [pool.submit(make, 0)] if chunks else []
        for group in range(len(chunks)):
            table = pending.pop().result()
            if group + 1 < len(chunks):
                pending.append(pool.submit(make, group + 1))
            yield table


def _write_file(path: Path, dim: int, tables: Iterable[pa.Table], row_group_size: int) -> None:
    """One parquet file with upstream's settings, renamed into place when complete."""
    with (
        durable.atomic_path(path) as temp,
        pq.ParquetWriter(
            temp,
            arrow_schema(dim),
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            write_page_index=True,
            use_dictionary=list(STRING_COLUMNS),
            write_statistics=list(METADATA_COLUMNS),
        ) as writer,
    ):
        for table in tables:
            writer.write_table(table, row_group_size=row_group_size)

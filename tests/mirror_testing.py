"""Helpers shared by the tests of the derived outputs: a mirror as `MirrorFile`s, a resync that
changes one file, and brute-force DuckDB queries over a whole file set."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.schema import DEFAULT_CONFIG, SORT_KEY
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.mirror_files import MirrorFile


def mirror_of(folder: Path) -> list[MirrorFile]:
    """The parquet files of `folder` in mirror order, hashed."""
    return [MirrorFile(p.name, sha256_file(p), p) for p in sorted(folder.glob("*.parquet"))]


def sample_mirror(sample: Path) -> list[MirrorFile]:
    return mirror_of(sample / DEFAULT_CONFIG)


def resync_one_file(files: Sequence[MirrorFile], index: int, out: Path) -> list[MirrorFile]:
    """`files` after upstream rewrote file `index`: some rows dropped, some relabelled to
    another species, some added with new uuids; still sorted, same row-group size."""
    source = files[index]
    table = pq.read_table(source.path)
    rng = np.random.default_rng(index)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[rng.choice(table.num_rows, 40, replace=False)] = False
    table = table.filter(pa.array(keep))
    relabel = np.zeros(table.num_rows, dtype=bool)
    relabel[rng.choice(table.num_rows, 25, replace=False)] = True
    species = pc.if_else(pa.array(relabel), "relabellus", table["species"])
    table = table.set_column(table.schema.get_field_index("species"), "species", species)
    added = table.take(rng.choice(table.num_rows, 30, replace=False))
    fresh = pa.array([str(uuid.UUID(int=int(rng.integers(2**62)))) for _ in range(30)])
    added = added.set_column(0, "uuid", fresh)
    table = pa.concat_tables([table, added]).sort_by([(c, "ascending") for c in SORT_KEY])
    out.mkdir(parents=True, exist_ok=True)
    path = out / source.name
    row_group = pq.ParquetFile(source.path).metadata.row_group(0).num_rows
    pq.write_table(table, path, row_group_size=row_group, compression="zstd")
    changed = MirrorFile(source.name, sha256_file(path), path)
    return [changed if f.name == source.name else f for f in files]


def brute(files: Sequence[MirrorFile], sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Rows of `sql`, where `rows` names every row of `files`, sorted (NULLs last)."""
    con = duckdb.connect()
    con.read_parquet([str(f.path) for f in files]).create_view("rows")
    return sorted(con.execute(sql, list(params)).fetchall(), key=sort_key)


def sort_key(row: Sequence[Any]) -> tuple:
    return tuple((v is None, v if v is not None else "") for v in row)


def rows_of(table: pa.Table, columns: Sequence[str]) -> list[tuple]:
    """`columns` of `table` as sorted tuples, to compare with `brute`."""
    data = table.select(list(columns)).to_pylist()
    return sorted((tuple(r.values()) for r in data), key=sort_key)

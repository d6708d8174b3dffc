"""Centroids: the float32 mean and count per lineage equal numpy over the raw rows, at species
and genus level, whatever the chunking, and only changed files are read again."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import brute, resync_one_file, rows_of, sample_mirror

from tol_dagster.derived import centroids
from tol_dagster.derived.centroids import build_centroids, centroid_schema, read_centroids
from tol_dagster.parquet.list_table import ListTableWriter
from tol_dagster.schema import RANKS, config_dim, quote_ident
from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

CONFIG = "bioclip-2_float16"
DIM = config_dim(CONFIG)


@pytest.fixture(scope="module")
def built(
    small_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[MirrorFile], Layout, pa.Table]:
    files = sample_mirror(small_sample)
    layout = Layout(tmp_path_factory.mktemp("home"))
    result = build_centroids(files, layout, CONFIG, DIM)
    assert result.recomputed == tuple(f.name for f in files)
    table = read_centroids(layout, CONFIG)
    assert (result.species, result.genus) == (
        pc.sum(pc.equal(table["level"], "species")).as_py(),
        pc.sum(pc.equal(table["level"], "genus")).as_py(),
    )
    return files, layout, table


@pytest.fixture(scope="module")
def rows(built: tuple[list[MirrorFile], Layout, pa.Table]) -> pa.Table:
    files, _, _ = built
    return pa.concat_tables(pq.read_table(f.path, columns=[*RANKS, "emb"]) for f in files)


def test_duckdb_reads_the_published_table_as_pyarrow_does(
    built: tuple[list[MirrorFile], Layout, pa.Table],
) -> None:
    """The centroid column is written by `list_encode`, not pyarrow: a consumer's one DuckDB
    line reads the same labels and values (as FLOAT[], as from any parquet list)."""
    _, layout, table = built
    with duckdb.connect() as con:
        read = con.sql(
            f"SELECT * FROM read_parquet(?) WHERE level = 'species' AND {quote_ident('class')}"
            " IS NOT NULL ORDER BY images DESC, species LIMIT 5",
            params=[str(layout.centroids_path(CONFIG))],
        ).to_arrow_table()
        (kind,) = con.execute(
            "SELECT typeof(centroid) FROM read_parquet(?) LIMIT 1",
            [str(layout.centroids_path(CONFIG))],
        ).fetchone()
    assert kind == "FLOAT[]" and read.num_rows == 5
    species = _level(table, "species")
    for row in read.to_pylist():
        match = species.filter(pc.equal(species["species"], row["species"]))
        match = match.filter(pc.equal(match["genus"], row["genus"]))
        assert match.num_rows == 1 and match["images"][0].as_py() == row["images"]
        expected = match["centroid"][0].values.to_numpy()
        assert np.array_equal(np.asarray(row["centroid"], np.float32), expected)


def _level(table: pa.Table, level: str) -> pa.Table:
    return table.filter(pc.equal(table["level"], level))


@pytest.mark.parametrize("level", ["species", "genus"])
def test_counts_equal_group_by_for_every_lineage_of_the_level(
    built: tuple[list[MirrorFile], Layout, pa.Table], level: str
) -> None:
    files, _, table = built
    depth = RANKS.index(level) + 1
    kept = ", ".join(quote_ident(r) for r in RANKS[:depth])
    expected = brute(
        files,
        f"SELECT {kept}, count(*) FROM rows WHERE {quote_ident(level)} IS NOT NULL GROUP BY ALL",
    )
    assert rows_of(_level(table, level), [*RANKS[:depth], "images"]) == expected
    assert all(_level(table, level)[r].null_count == len(expected) for r in RANKS[depth:])


def _brute_mean(
    rows: pa.Table, lineage: dict[str, str | None], ranks: tuple[str, ...]
) -> np.ndarray:
    mask = np.ones(rows.num_rows, dtype=bool)
    for rank in ranks:
        column = rows[rank]
        value = lineage[rank]
        same = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
        mask &= same.to_numpy(zero_copy_only=False)
    vectors = np.stack(rows.filter(pa.array(mask))["emb"].to_numpy(zero_copy_only=False))
    return vectors.astype(np.float64).mean(axis=0)


@pytest.mark.parametrize("level", ["species", "genus"])
def test_centroids_equal_a_numpy_mean_of_the_rows(
    built: tuple[list[MirrorFile], Layout, pa.Table], rows: pa.Table, level: str
) -> None:
    _, _, table = built
    at_level = _level(table, level)
    ranks = RANKS[: RANKS.index(level) + 1]
    biggest = int(pc.index(at_level["images"], pc.max(at_level["images"])).as_py())
    hole = int(pc.index(pc.is_null(at_level["class"]), True).as_py())
    assert hole >= 0, "the sample must hold a NULL-class lineage for this test to mean anything"
    for row in at_level.take([0, biggest, hole, at_level.num_rows - 1]).to_pylist():
        expected = _brute_mean(rows, row, ranks)
        np.testing.assert_allclose(row["centroid"], expected, rtol=1e-5, atol=1e-4)


def test_chunked_recombination_gives_the_same_table(
    built: tuple[list[MirrorFile], Layout, pa.Table],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files, _, table = built
    monkeypatch.setattr(centroids, "CHUNK_BYTES", 8 * DIM * 5)
    layout = Layout(tmp_path)
    build_centroids(files, layout, CONFIG, DIM)
    chunked = read_centroids(layout, CONFIG)
    assert chunked.schema == centroid_schema(DIM)
    assert chunked.drop_columns(["centroid"]).equals(table.drop_columns(["centroid"]))
    np.testing.assert_allclose(
        np.stack(chunked["centroid"].to_numpy(zero_copy_only=False)),
        np.stack(table["centroid"].to_numpy(zero_copy_only=False)),
        rtol=1e-6,
    )
    assert pq.ParquetFile(layout.centroids_path(CONFIG)).num_row_groups > 2


def test_species_rows_come_before_genus_rows(
    built: tuple[list[MirrorFile], Layout, pa.Table],
) -> None:
    _, _, table = built
    levels = table["level"].to_pylist()
    assert levels == sorted(levels, key=["species", "genus"].index)


def test_after_one_file_changes_only_it_is_read_and_the_table_equals_a_rebuild(
    built: tuple[list[MirrorFile], Layout, pa.Table], tmp_path: Path
) -> None:
    files, layout, _ = built
    changed = resync_one_file(files, 0, tmp_path / "resync")
    assert build_centroids(changed, layout, CONFIG, DIM).recomputed == (files[0].name,)
    fresh = Layout(tmp_path / "fresh")
    build_centroids(changed, fresh, CONFIG, DIM)
    assert read_centroids(layout, CONFIG).equals(read_centroids(fresh, CONFIG))
    relabelled = read_centroids(layout, CONFIG).filter(
        pc.equal(read_centroids(layout, CONFIG)["species"], "relabellus")
    )
    assert (
        pc.sum(relabelled["images"]).as_py()
        == brute(changed, "SELECT count(*) FROM rows WHERE species = 'relabellus'")[0][0]
    )


def test_a_width_other_than_the_files_is_refused_by_name(
    built: tuple[list[MirrorFile], Layout, pa.Table], tmp_path: Path
) -> None:
    files, layout, _ = built
    message = f"{files[0].name}: its embeddings are not 512 values wide"
    with pytest.raises(ValueError, match=message):
        build_centroids(files[:1], Layout(tmp_path), CONFIG, 512)
    with pytest.raises(ValueError, match=message):  # the cached sums are checked too
        build_centroids(files[:1], layout, CONFIG, 512)


def test_an_unbuilt_table_says_what_to_materialize(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"materialize tol/{CONFIG}/centroids"):
        read_centroids(Layout(tmp_path), CONFIG)


def _sequential_sums(matrices: list[np.ndarray], lineages: list[np.ndarray]) -> tuple:
    """The rows sorted by lineage (stably: part order), each lineage's rows added one after
    another from its first, and what `_lineage_sums` is given for them."""
    offsets = np.cumsum([0, *(len(m) for m in matrices)])
    every = np.concatenate(lineages)
    rows = np.argsort(every, kind="stable")
    runs = np.flatnonzero(np.diff(every[rows], prepend=-1))
    flat = np.concatenate(matrices)
    expected = []
    for start, end in zip(runs, [*runs[1:], len(rows)], strict=True):
        total = flat[rows[start]].copy()
        for row in rows[start + 1 : end]:
            total = total + flat[row]
        expected.append(total)
    return offsets, rows, runs, np.stack(expected)


@pytest.mark.parametrize("sorted_parts", [True, False])
def test_lineage_sums_add_each_lineages_rows_in_part_order_bit_for_bit(sorted_parts: bool) -> None:
    rng = np.random.default_rng(1)
    matrices, lineages = [], []
    for _ in range(30):
        count = int(rng.integers(1, 9))
        if sorted_parts:  # a part as written: its lineages sorted, each once
            lineages.append(np.sort(rng.choice(12, min(count, 12), replace=False)))
        else:  # anything else still sums right, one row at a time
            lineages.append(rng.integers(0, 12, count))
        values = rng.normal(size=(len(lineages[-1]), 4)) * 10.0 ** rng.integers(-8, 8, (1, 4))
        values[rng.random(values.shape) < 0.2] = 0.0
        values[:, 0] = -0.0  # a sum of only -0.0 stays -0.0
        matrices.append(values)
    offsets, rows, runs, expected = _sequential_sums(matrices, lineages)
    got = centroids._lineage_sums(matrices, offsets, rows, runs)
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    assert (np.signbit(expected) & (expected == 0)).any()
    # a chunk of whole lineages from the middle of the sorted rows
    low, high = runs[3], runs[9]
    middle = centroids._lineage_sums(matrices, offsets, rows[low:high], runs[3:9] - low)
    assert np.array_equal(middle.view(np.uint64), expected[3:9].view(np.uint64))


def test_lineage_sums_add_both_of_a_parts_consecutive_rows_of_one_lineage() -> None:
    # Not what `file_sums` writes (a lineage once a part), but summed right all the same
    parts = [np.array([[1.0, -0.0], [2.0, -0.0]]), np.array([[4.0, 8.0]])]
    got = centroids._lineage_sums(parts, np.array([0, 2, 3]), np.array([0, 1, 2]), np.array([0]))
    assert got.tolist() == [[7.0, 8.0]]


def test_a_full_disk_mid_publish_keeps_the_published_table_and_stops_the_chunks_summed_ahead(
    built: tuple[list[MirrorFile], Layout, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, layout, _ = built
    published = layout.centroids_path(CONFIG).read_bytes()
    monkeypatch.setattr(centroids, "CHUNK_BYTES", 8 * DIM * 5)  # many chunks: some still ahead
    made, closed = [], []
    chunks = centroids._centroid_chunks

    def watched(*args: object) -> Iterator[tuple[pa.Table, pa.Table]]:
        try:
            for chunk in chunks(*args):  # type: ignore[arg-type]
                made.append(chunk)
                yield chunk
        finally:
            closed.append(True)

    write_table = ListTableWriter.write_table
    writes: list[int] = []

    def full(writer: ListTableWriter, table: pa.Table) -> None:
        writes.append(table.num_rows)
        if len(writes) == 3:
            time.sleep(0.3)  # a slow disk: the thread summing ahead fills what it may meanwhile
            raise OSError(errno.ENOSPC, "No space left on device")
        write_table(writer, table)

    monkeypatch.setattr(centroids, "_centroid_chunks", watched)
    monkeypatch.setattr(ListTableWriter, "write_table", full)
    with pytest.raises(OSError, match="No space left"):
        build_centroids(files, layout, CONFIG, DIM)
    assert closed == [True]  # the thread summing ahead stopped before the error came out
    # Ahead of the writer by the chunk queued and the one waiting to be (of 100 or more)
    assert len(made) == len(writes) + 2
    assert layout.centroids_path(CONFIG).read_bytes() == published
    assert not list(layout.centroids_path(CONFIG).parent.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))

"""The taxon index: counts equal a brute-force scan, row ranges hold exactly the taxon's rows,
species resolve as binomials, and only changed files are re-indexed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import brute, resync_one_file, sample_mirror

from tol_dagster.derived import taxon_index
from tol_dagster.derived.taxon_index import (
    BINOMIAL_SQL,
    INDEX_SCHEMA,
    build_taxon_index,
    count,
    lookup,
    read_taxon_index,
)
from tol_dagster.parquet.segmented import declared_segments
from tol_dagster.schema import SLICE_RANKS, quote_ident
from tol_dagster.slices.keys import parse_slice_key, to_sql_filter
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

CONFIG = "bioclip-2_float16"


@pytest.fixture(scope="module")
def built(
    small_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[MirrorFile], Layout, pa.Table]:
    files = sample_mirror(small_sample)
    layout = Layout(tmp_path_factory.mktemp("home"))
    result = build_taxon_index(files, layout, CONFIG)
    assert result.recomputed == tuple(f.name for f in files)
    index = read_taxon_index(layout, CONFIG)
    assert (result.rows, result.bytes) == (index.num_rows, result.path.stat().st_size)
    return files, layout, index


def _value_sql(rank: str) -> str:
    return BINOMIAL_SQL if rank == "species" else quote_ident(rank)


@pytest.mark.parametrize("rank", SLICE_RANKS)
def test_counts_equal_a_scan_for_every_value_of_the_rank(
    built: tuple[list[MirrorFile], Layout, pa.Table], rank: str
) -> None:
    files, _, index = built
    expected = brute(
        files,
        f"SELECT {_value_sql(rank)} AS v, count(*) FROM rows WHERE v IS NOT NULL GROUP BY v",
    )
    assert len(expected) > 1
    assert sorted((value, count(index, rank, value)) for value, _ in expected) == expected
    indexed = set(pc.unique(index.filter(pc.equal(index["rank"], rank))["value"]).to_pylist())
    assert indexed == {value for value, _ in expected}


@pytest.mark.parametrize("rank", ["family", "genus", "species", "scientific_name"])
def test_row_ranges_hold_exactly_the_taxons_rows(
    built: tuple[list[MirrorFile], Layout, pa.Table], rank: str
) -> None:
    files, _, index = built
    con_files = {f.name: f for f in files}
    for file_name, file in con_files.items():
        parquet = pq.ParquetFile(file.path)
        starts = np.cumsum(
            [0] + [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        )
        values = brute(
            [file],
            f"SELECT file_row_number, {_value_sql(rank)} FROM read_parquet(?, file_row_number = true)",
            [str(file.path)],
        )
        by_row = [v for _, v in sorted(values, key=lambda r: r[0])]
        entries = index.filter(
            pc.and_(pc.equal(index["rank"], rank), pc.equal(index["file"], file_name))
        ).to_pylist()
        seen = 0
        for e in entries:
            group = by_row[starts[e["row_group"]] : starts[e["row_group"] + 1]]
            first, end = (
                e["row_start"] - starts[e["row_group"]],
                e["row_end"] - starts[e["row_group"]],
            )
            assert group[first] == e["value"] and group[end - 1] == e["value"]
            assert group[first:end].count(e["value"]) == e["rows"] == group.count(e["value"])
            seen += e["rows"]
        assert seen == sum(v is not None for v in by_row)


def test_entries_follow_the_mirror_order(built: tuple[list[MirrorFile], Layout, pa.Table]) -> None:
    files, _, index = built
    order = {f.name: i for i, f in enumerate(files)}
    for rank, value in [("kingdom", "Animalia"), ("kingdom", "Plantae")]:
        entries = lookup(index, rank, value)
        assert len({e.file for e in entries}) > 1, "pick a taxon that spans files"
        positions = [(order[e.file], e.row_group) for e in entries]
        assert positions == sorted(positions)


def test_species_binomial_matches_epithet_and_binomial_rows_like_a_slice_key(
    built: tuple[list[MirrorFile], Layout, pa.Table],
) -> None:
    files, _, index = built
    mixed = brute(
        files,
        f"""SELECT {BINOMIAL_SQL} AS b FROM rows WHERE b IS NOT NULL GROUP BY b
        HAVING bool_or(contains(species, ' ')) AND bool_or(NOT contains(species, ' '))""",
    )
    assert mixed, "the sample must hold a species spelled both ways"
    for (binomial,) in mixed[:5]:
        where, params = to_sql_filter(parse_slice_key(f"species={binomial}"))
        expected = brute(files, f"SELECT count(*) FROM rows WHERE {where}", params)[0][0]
        assert count(index, "species", binomial) == expected


def test_a_homonym_genus_is_found_in_both_kingdoms(
    built: tuple[list[MirrorFile], Layout, pa.Table],
) -> None:
    files, _, index = built
    expected = brute(files, "SELECT count(*) FROM rows WHERE genus = 'Morus'")[0][0]
    kingdoms = brute(files, "SELECT DISTINCT kingdom FROM rows WHERE genus = 'Morus'")
    assert len(kingdoms) == 2
    assert count(index, "genus", "Morus") == expected


def test_a_small_index_is_searched_as_a_large_one_is(
    built: tuple[list[MirrorFile], Layout, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value's own few entries (a rank pass's) are searched in Python: the same entries, in
    the same order, as pyarrow's filter finds, with homonyms, unicode and absent values."""
    _, _, index = built
    rng = np.random.default_rng(7)
    queries = [
        (r, v) for r, v in zip(*index.select(["rank", "value"]).to_pydict().values(), strict=True)
    ]
    queries += [("family", "Nonexistidae"), ("species", "Morus"), ("genus", "")]
    for size in (1, 5, taxon_index.SMALL_INDEX):
        for start in rng.integers(0, index.num_rows - size, 30):
            small = index.slice(int(start), size)
            asked = [queries[int(i)] for i in rng.integers(0, len(queries), 20)]
            asked += [
                (r, v)
                for r, v in zip(*small.select(["rank", "value"]).to_pydict().values(), strict=True)
            ]
            found = [lookup(small, r, v) for r, v in asked]
            monkeypatch.setattr(taxon_index, "SMALL_INDEX", -1)
            assert found == [lookup(small, r, v) for r, v in asked]
            monkeypatch.undo()
            assert any(found)


def test_an_absent_taxon_has_no_entries(built: tuple[list[MirrorFile], Layout, pa.Table]) -> None:
    _, _, index = built
    assert lookup(index, "family", "Nonexistidae") == []
    assert count(index, "family", "Nonexistidae") == 0
    with pytest.raises(ValueError, match="expected one of kingdom"):
        lookup(index, "tribe", "Danaini")


def test_after_one_file_changes_only_it_is_reindexed_and_the_index_equals_a_rebuild(
    built: tuple[list[MirrorFile], Layout, pa.Table], tmp_path: Path
) -> None:
    files, layout, _ = built
    before = declared_segments(layout.taxon_index_path(CONFIG)) or []
    changed = resync_one_file(files, 2, tmp_path / "resync")
    assert build_taxon_index(changed, layout, CONFIG).recomputed == (files[2].name,)
    after = declared_segments(layout.taxon_index_path(CONFIG)) or []
    # A segment per file here: the unchanged files' entries are the old index's bytes.
    assert len(after) == len(files) and [s[2] for s in after[:2]] == [s[2] for s in before[:2]]
    assert after[2][0] != before[2][0]
    fresh = Layout(tmp_path / "fresh")
    build_taxon_index(changed, fresh, CONFIG)
    index = read_taxon_index(layout, CONFIG)
    assert index.equals(read_taxon_index(fresh, CONFIG))
    relabelled = brute(
        changed,
        "SELECT genus, count(*) FROM rows WHERE species = 'relabellus' AND genus IS NOT NULL GROUP BY 1",
    )
    assert relabelled
    for genus, rows in relabelled:
        assert count(index, "species", f"{genus} relabellus") == rows


#: Row group sizes of a file of n rows, and whether a block of rows is then its row group (no
#: join needed to place it).
LAYOUTS: dict[str, tuple[Callable[[int], list[int]], bool]] = {
    "irregular": (lambda n: [333, 500, 77, n - 910], False),
    "uniform, a shorter last": (lambda n: [n // 3 + 1] * 2 + [n - 2 * (n // 3 + 1)], True),
    "uniform, a longer last": (lambda n: [n // 3 - 1] * 2 + [n - 2 * (n // 3 - 1)], False),
    "one row group": (lambda n: [n], True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_entries_place_each_taxons_rows_in_their_row_groups_whatever_the_layout(
    built: tuple[list[MirrorFile], Layout, pa.Table], tmp_path: Path, layout: str
) -> None:
    files, _, _ = built
    table = pq.read_table(files[0].path)
    sizes, direct = LAYOUTS[layout]
    path = tmp_path / files[0].name
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for size in sizes(table.num_rows):
            writer.write_table(table.slice(start, size), row_group_size=size)
            start += size
    odd = [MirrorFile(path.name, sha256_file(path), path)]
    starts = taxon_index._row_group_starts(odd)
    block = np.gcd.reduce(starts["start"].to_numpy()) or 1 << 62
    assert taxon_index._blocks_are_row_groups(starts, int(block)) is direct
    layout_home = Layout(tmp_path / "home")
    build_taxon_index(odd, layout_home, CONFIG)
    index = read_taxon_index(layout_home, CONFIG)
    assert index.schema == INDEX_SCHEMA
    begins = starts["start"].to_pylist()
    for rank in ("family", "genus"):
        expected: dict[tuple[str, int], list[int]] = {}
        for row, value in enumerate(table[rank].to_pylist()):
            if value is not None:
                group = int(np.searchsorted(begins, row, side="right")) - 1
                first, _, rows = expected.get((value, group), [row, row, 0])
                expected[(value, group)] = [first, row + 1, rows + 1]
        entries = index.filter(pc.equal(index["rank"], rank)).to_pylist()
        found = {
            (e["value"], e["row_group"]): [e["row_start"], e["row_end"], e["rows"]] for e in entries
        }
        assert found == expected

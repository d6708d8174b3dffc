"""Summary tables: equal to brute-force GROUP BY queries, NULL holes kept, rebuilt per file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import brute, resync_one_file, rows_of, sample_mirror

from tol_dagster.derived.summaries import (
    SCHEMAS,
    SUMMARY_NAMES,
    VALUE_COLUMNS,
    build_summaries,
    read_summary,
)
from tol_dagster.parquet.segmented import declared_segments
from tol_dagster.schema import RANKS, SORT_KEY, quote_ident
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile, mirror_files

CONFIG = "bioclip-2_float16"
LINEAGE = ["source_dataset", *RANKS]
LINEAGE_SQL = ", ".join(quote_ident(c) for c in LINEAGE)


@pytest.fixture(scope="module")
def built(
    small_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[MirrorFile], Layout]:
    files = sample_mirror(small_sample)
    layout = Layout(tmp_path_factory.mktemp("home"))
    result = build_summaries(files, layout, CONFIG)
    assert result.recomputed == tuple(f.name for f in files)
    return files, layout


def test_lineage_counts_equal_group_by_with_null_holes_kept(
    built: tuple[list[MirrorFile], Layout],
) -> None:
    files, layout = built
    lineage = read_summary(layout, CONFIG, "lineage")
    expected = brute(files, f"SELECT {LINEAGE_SQL}, count(*) FROM rows GROUP BY ALL")
    assert rows_of(lineage, [*LINEAGE, "images"]) == expected
    holes = [r for r in expected if r[3] is None and r[4] is not None]  # NULL class, known order
    assert holes, "the sample must hold NULL-class lineages for this test to mean anything"
    assert (
        sum(r[-1] for r in holes)
        == brute(files, 'SELECT count(*) FROM rows WHERE "class" IS NULL AND "order" IS NOT NULL')[
            0
        ][0]
    )


@pytest.mark.parametrize("depth", range(len(RANKS)))
def test_rank_counts_equal_group_by_at_every_rank(
    built: tuple[list[MirrorFile], Layout], depth: int
) -> None:
    files, layout = built
    rank = RANKS[depth]
    table = read_summary(layout, CONFIG, "rank_counts")
    at_rank = table.filter(pc.equal(table["rank"], rank))
    kept = LINEAGE[: depth + 2]
    expected = brute(
        files, f"SELECT {', '.join(map(quote_ident, kept))}, count(*) FROM rows GROUP BY ALL"
    )
    assert rows_of(at_rank, [*kept, "images"]) == expected
    below = LINEAGE[depth + 2 :]
    assert all(at_rank[c].null_count == at_rank.num_rows for c in below)


def test_homonym_genus_counts_stay_apart_by_kingdom(built: tuple[list[MirrorFile], Layout]) -> None:
    files, layout = built
    table = read_summary(layout, CONFIG, "rank_counts")
    morus = [r for r in table.to_pylist() if r["rank"] == "genus" and r["genus"] == "Morus"]
    expected = brute(files, "SELECT kingdom, count(*) FROM rows WHERE genus = 'Morus' GROUP BY ALL")
    assert len(expected) == 2
    totals: dict[str, int] = {}
    for row in morus:
        totals[row["kingdom"]] = totals.get(row["kingdom"], 0) + row["images"]
    assert sorted(totals.items()) == expected


@pytest.mark.parametrize("name", VALUE_COLUMNS)
def test_value_counts_equal_group_by(built: tuple[list[MirrorFile], Layout], name: str) -> None:
    files, layout = built
    column = quote_ident(VALUE_COLUMNS[name])
    expected = brute(files, f"SELECT source_dataset, {column}, count(*) FROM rows GROUP BY ALL")
    assert (
        rows_of(read_summary(layout, CONFIG, name), ["source_dataset", "value", "images"])
        == expected
    )


def test_file_statistics_match_footers_and_first_last_rows(
    built: tuple[list[MirrorFile], Layout],
) -> None:
    files, layout = built
    table = read_summary(layout, CONFIG, "files")
    assert table.schema == SCHEMAS["files"]
    for file, row in zip(files, table.to_pylist(), strict=True):
        meta = pq.read_metadata(file.path)
        data = pq.read_table(file.path, columns=list(SORT_KEY)).to_pylist()
        assert (row["file"], row["sha256"]) == (file.name, file.sha256)
        assert (row["rows"], row["row_groups"]) == (meta.num_rows, meta.num_row_groups)
        assert row["bytes"] == file.path.stat().st_size
        assert (row["first_key"], row["last_key"]) == (data[0], data[-1])


def test_every_table_is_published_with_its_schema(built: tuple[list[MirrorFile], Layout]) -> None:
    _, layout = built
    folder = layout.summary_dir(CONFIG)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.parquet" for n in SUMMARY_NAMES)
    for name in SUMMARY_NAMES:
        assert read_summary(layout, CONFIG, name).schema == SCHEMAS[name]


def test_after_one_file_changes_only_it_is_rescanned_and_tables_equal_a_rebuild(
    built: tuple[list[MirrorFile], Layout], tmp_path: Path
) -> None:
    files, layout = built
    segmented = [layout.summary_dir(CONFIG) / f"{n}.parquet" for n in ("lineage", "rank_counts")]
    before = [declared_segments(path) or [] for path in segmented]
    changed = resync_one_file(files, 1, tmp_path / "resync")
    result = build_summaries(changed, layout, CONFIG)
    assert result.recomputed == (files[1].name,)
    for path, old in zip(segmented, before, strict=True):
        new = declared_segments(path) or []
        # The last file's groups neither changed nor join the changed file's: its bytes are kept.
        assert len(new) == len(files) and new[-1] == old[-1] and new[1][0] != old[1][0]
    fresh = Layout(tmp_path / "fresh")
    build_summaries(changed, fresh, CONFIG)
    for name in SUMMARY_NAMES:
        assert read_summary(layout, CONFIG, name).equals(read_summary(fresh, CONFIG, name)), name
    assert build_summaries(files, layout, CONFIG).recomputed == ()


def test_force_rescans_every_file(built: tuple[list[MirrorFile], Layout]) -> None:
    files, layout = built
    before = read_summary(layout, CONFIG, "lineage")
    assert build_summaries(files, layout, CONFIG, force=True).recomputed == tuple(
        f.name for f in files
    )
    assert read_summary(layout, CONFIG, "lineage").equals(before)


def test_an_empty_mirror_gives_empty_tables_with_their_schemas(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    result = build_summaries([], layout, CONFIG)
    assert result.rows == dict.fromkeys(SUMMARY_NAMES, 0)
    for name in SUMMARY_NAMES:
        assert read_summary(layout, CONFIG, name).schema == SCHEMAS[name]


def test_unknown_or_unbuilt_summary_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of lineage"):
        read_summary(Layout(tmp_path), CONFIG, "orders")
    with pytest.raises(FileNotFoundError, match=f"materialize tol/{CONFIG}/summary/lineage"):
        read_summary(Layout(tmp_path), CONFIG, "lineage")


def test_files_out_of_mirror_order_still_sum_to_the_group_by(
    small_sample: Path, tmp_path: Path
) -> None:
    files = sample_mirror(small_sample)[::-1]  # the per-file parts no longer join in order
    layout = Layout(tmp_path)
    build_summaries(files, layout, CONFIG)
    expected = brute(files, f"SELECT {LINEAGE_SQL}, count(*) FROM rows GROUP BY ALL")
    assert rows_of(read_summary(layout, CONFIG, "lineage"), [*LINEAGE, "images"]) == expected


def test_mirror_files_follow_the_manifest_in_mirror_order_and_name_a_missing_file(
    small_sample: Path, tmp_path: Path
) -> None:
    files = sample_mirror(small_sample)
    folder = files[0].path.parent
    shas = {f"{CONFIG}/{f.name}": f.sha256 for f in reversed(files)}  # repo paths, any order
    assert mirror_files(folder, shas) == files
    with pytest.raises(FileNotFoundError, match=r"train-00009-of-00010\.parquet.*tol-dagster sync"):
        mirror_files(folder, {**shas, "train-00009-of-00010.parquet": "0" * 64})

"""Groups cut by file boundaries: joined at the seams, each published once with its total, by
the file where it starts; and summary tables built that way equal brute-force GROUP BYs on
mirrors cut anywhere (inside a group, files of one lineage, a kingdom across every file), before
and after one file changes."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from mirror_testing import brute, rows_of

from tol_dagster.derived import seams, summaries, summary_facts
from tol_dagster.derived.summaries import SUMMARY_NAMES, build_summaries, read_summary
from tol_dagster.parquet.segmented import declared_segments
from tol_dagster.schema import RANKS, SORT_KEY, quote_ident
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

CONFIG = "bioclip-2_float16"
LINEAGE = ["source_dataset", *RANKS]


def groups(first: tuple, last: tuple, counts: list[tuple[int, int, int]]) -> seams.FileGroups:
    return seams.FileGroups(
        groups=[c[0] for c in counts],
        first_images=[c[1] for c in counts],
        last_images=[c[2] for c in counts],
        first=first,
        last=last,
    )


def test_a_group_across_three_files_is_owned_by_the_first_with_the_total() -> None:
    # Two levels; at level 0 ("s", "A") spans all three files, at level 1 ("s", "A", "x")
    # spans the seam of files 0 and 1, and file 1 holds nothing else at level 0.
    files = [
        groups(("s", "A", "w"), ("s", "A", "x"), [(1, 5, 5), (2, 2, 3)]),
        groups(("s", "A", "x"), ("s", "A", "y"), [(1, 4, 4), (2, 1, 3)]),
        groups(("s", "A", "y"), ("s", "B", "z"), [(2, 6, 2), (2, 6, 2)]),
    ]
    joined = seams.join(files)
    assert joined is not None
    assert [j.merged for j in joined] == [(False, False), (True, True), (True, True)]
    # level 0: file 0 owns A (5 + 4 + 6), file 2 owns B; level 1: x = 3 + 1, y = 3 + 6, z = 2
    assert [j.total for j in joined] == [(15, 4), (None, 9), (2, 2)]


def test_files_out_of_lineage_order_cannot_be_joined_and_empty_files_are_skipped() -> None:
    a = groups(("s", "A"), ("s", "A"), [(1, 2, 2)])
    b = groups(("s", "B"), ("s", "B"), [(1, 3, 3)])
    empty = groups((), (), [(0, 0, 0)])
    assert seams.join([b, a]) is None
    joined = seams.join([a, empty, b])
    assert joined is not None and [j.total for j in joined] == [(2,), (None,), (3,)]
    # NULLs sort last and equal each other in a run
    nulls = [groups(("s", None), ("s", None), [(1, 1, 1)]) for _ in range(2)]
    assert [j.total for j in seams.join([a, *nulls]) or []] == [(2,), (2,), (None,)]


def mirror(folder: Path, seed: int) -> list[MirrorFile]:
    """A sorted mirror of random lineages (few values, NULL holes, a quote and unicode), cut
    into files at random rows: inside groups, and into files of a single lineage."""
    rng = random.Random(seed)
    names = ["Aa", "B'b", "Çc", None]
    rows = []
    for _ in range(rng.randint(150, 400)):
        lineage = ["gbif" if rng.random() < 0.8 else "eol"]
        lineage += [rng.choice(names[:2]) if depth < 2 else rng.choice(names) for depth in range(7)]
        rows.append([*lineage, rng.choice(["x", "y"]), rng.choice(["HO", None]), "p", None])
    columns = [*LINEAGE, "img_type", "basisOfRecord", "publisher", "common_name"]
    table = pa.table(
        {c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(columns)}
    )
    table = table.sort_by([(c, "ascending") for c in SORT_KEY])
    total = table.num_rows
    cuts = sorted(rng.sample(range(1, total), rng.randint(3, 12)))
    cuts += [cuts[-1] + 1] if cuts[-1] + 1 < total else []  # a one-row file
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (start, end) in enumerate(zip([0, *cuts], [*cuts, total], strict=True)):
        path = folder / f"train-{i:05d}.parquet"
        pq.write_table(table.slice(start, end - start), path)
        files.append(MirrorFile(path.name, sha256_file(path), path))
    return files


def expected(files: list[MirrorFile]) -> dict[str, list[tuple]]:
    lineage = ", ".join(quote_ident(c) for c in LINEAGE)
    ranks = [quote_ident(r) for r in RANKS]
    sets = ", ".join(f"(source_dataset, {', '.join(ranks[: i + 1])})" for i in range(len(ranks)))
    return {
        "lineage": brute(files, f"SELECT {lineage}, count(*) FROM rows GROUP BY ALL"),
        "rank_counts": brute(
            files, f"SELECT {lineage}, count(*) FROM rows GROUP BY GROUPING SETS ({sets})"
        ),
        "img_type": brute(
            files, "SELECT source_dataset, img_type, count(*) FROM rows GROUP BY ALL"
        ),
    }


def published(layout: Layout) -> dict[str, list[tuple]]:
    columns = {
        "lineage": [*LINEAGE, "images"],
        "rank_counts": [*LINEAGE, "images"],
        "img_type": ["source_dataset", "value", "images"],
    }
    return {name: rows_of(read_summary(layout, CONFIG, name), c) for name, c in columns.items()}


@pytest.mark.parametrize("seed", range(8))
def test_summaries_of_a_mirror_cut_anywhere_equal_the_group_by_before_and_after_a_change(
    tmp_path: Path, seed: int
) -> None:
    files = mirror(tmp_path / "v1", seed)
    layout = Layout(tmp_path / "home")
    build_summaries(files, layout, CONFIG)
    assert published(layout) == expected(files)
    before = declared_segments(layout.summary_dir(CONFIG) / "rank_counts.parquet") or []

    # Upstream rewrites one file: some of its rows dropped, some repeated; still sorted.
    rng = random.Random(seed)
    changed = rng.randrange(len(files))
    table = pq.read_table(files[changed].path)
    kept = [i for i in range(table.num_rows) if rng.random() < 0.6]
    kept = sorted(kept + rng.sample(range(table.num_rows), min(3, table.num_rows)))
    path = tmp_path / "v2" / files[changed].name
    path.parent.mkdir()
    pq.write_table(table.take(kept), path)
    new_files = list(files)
    new_files[changed] = MirrorFile(path.name, sha256_file(path), path)

    build_summaries(new_files, layout, CONFIG)
    assert published(layout) == expected(new_files)
    fresh = Layout(tmp_path / "fresh")
    build_summaries(new_files, fresh, CONFIG)
    for name in SUMMARY_NAMES:
        assert read_summary(layout, CONFIG, name).equals(read_summary(fresh, CONFIG, name)), name
    after = declared_segments(layout.summary_dir(CONFIG) / "rank_counts.parquet") or []
    assert len(after) == len(new_files)  # a segment per file at this size
    old_keys = {key: digest for key, _, digest in before}
    for key, _, digest in after:  # a segment under an old key is the old segment's bytes
        assert old_keys.get(key, digest) == digest
    assert after[changed][0] not in old_keys


def test_an_update_reads_only_the_parts_it_encodes_and_a_lost_facts_cache_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = mirror(tmp_path / "v1", 3)
    assert len(files) >= 6
    layout = Layout(tmp_path / "home")
    build_summaries(files, layout, CONFIG)
    middle = len(files) // 2
    table = pq.read_table(files[middle].path)
    assert table.num_rows > 1
    path = tmp_path / "v2" / files[middle].name
    path.parent.mkdir()
    pq.write_table(table.slice(0, table.num_rows // 2), path)
    changed = list(files)
    changed[middle] = MirrorFile(path.name, sha256_file(path), path)

    real = summaries._read_part
    read: list[str] = []

    def counted(layout: Layout, config: str, file: MirrorFile) -> object:
        read.append(file.name)
        return real(layout, config, file)

    monkeypatch.setattr(summaries, "_read_part", counted)
    build_summaries(changed, layout, CONFIG)
    assert published(layout) == expected(changed)
    assert files[middle].name in read and len(set(read)) < len(files) - 2
    # The kept values are one batch, not one per file (at 666 files those made an update's
    # filters and writes of them ~2.5x slower than all the rest of it).
    with pa.ipc.open_file(layout.state_dir(CONFIG) / summary_facts.VALUES) as kept:
        assert kept.num_record_batches == 1

    for name in (summary_facts.FACTS, summary_facts.VALUES):  # a damaged cache is rebuilt
        (layout.state_dir(CONFIG) / name).write_bytes(b"not arrow")
    read.clear()
    build_summaries(changed, layout, CONFIG)
    assert published(layout) == expected(changed) and len(set(read)) == len(changed)

    # Values that are not the facts' pair (a crash between the two writes) are not trusted.
    values = layout.state_dir(CONFIG) / summary_facts.VALUES
    feather.write_feather(feather.read_table(values).slice(0, 1), values)
    read.clear()
    build_summaries(changed, layout, CONFIG)
    assert published(layout) == expected(changed) and len(set(read)) == len(changed)


def test_two_files_of_one_content_count_twice(tmp_path: Path) -> None:
    files = mirror(tmp_path / "v1", 5)[:2]
    copy = tmp_path / "copy" / "train-99999.parquet"
    copy.parent.mkdir()
    copy.write_bytes(files[1].path.read_bytes())
    twice = [*files, MirrorFile(copy.name, files[1].sha256, copy)]
    layout = Layout(tmp_path / "home")
    build_summaries(twice, layout, CONFIG)
    assert published(layout) == expected(twice)


def test_two_updates_at_the_same_instant_publish_whole_tables(tmp_path: Path) -> None:
    """Each update reads the table the other may be replacing: a segment copied from a file
    renamed away in between fails its sha256 and the update writes whole; both publish a
    table equal to the GROUP BY, never half of one."""
    files = mirror(tmp_path / "v1", 11)
    layout = Layout(tmp_path / "home")
    build_summaries(files, layout, CONFIG)
    table = pq.read_table(files[0].path)
    path = tmp_path / "v2" / files[0].name
    path.parent.mkdir()
    pq.write_table(table.slice(0, max(1, table.num_rows // 2)), path)
    changed = [MirrorFile(path.name, sha256_file(path), path), *files[1:]]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def update() -> None:
        barrier.wait()
        try:
            build_summaries(changed, layout, CONFIG)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=update) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and published(layout) == expected(changed)

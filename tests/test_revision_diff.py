"""Revision diff: totals and per-taxon counts equal brute-force uuid set differences, reading only
the files whose content changed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from mirror_testing import brute, resync_one_file, sample_mirror

from tol_dagster.resync.revision_diff import diff_generations
from tol_dagster.schema import RANKS, quote_ident
from tol_dagster.store.mirror_files import MirrorFile

PAIRS = f"SELECT DISTINCT uuid, {', '.join(quote_ident(r) for r in RANKS)} FROM rows"


@pytest.fixture
def generations(small_sample: Path, tmp_path: Path) -> tuple[list[MirrorFile], list[MirrorFile]]:
    """The sample, and the sample after a resync that rewrote file 1 and dropped file 2."""
    old = sample_mirror(small_sample)
    new = resync_one_file(old, 1, tmp_path / "resync")[:2]
    return old, new


def test_totals_and_taxa_equal_uuid_set_differences(
    generations: tuple[list[MirrorFile], list[MirrorFile]],
) -> None:
    old, new = generations
    diff = diff_generations(old, new)
    old_pairs, new_pairs = set(brute(old, PAIRS)), set(brute(new, PAIRS))
    old_uuids, new_uuids = {p[0] for p in old_pairs}, {p[0] for p in new_pairs}
    assert diff.added == len(new_uuids - old_uuids) > 0
    assert diff.removed == len(old_uuids - new_uuids) > 0
    moved = {p[0] for p in new_pairs - old_pairs} & old_uuids
    assert diff.relabelled == len(moved) > 0
    added = Counter(p[1:] for p in new_pairs - old_pairs)
    removed = Counter(p[1:] for p in old_pairs - new_pairs)
    got = {tuple(r[k] for k in RANKS): (r["added"], r["removed"]) for r in diff.taxa.to_pylist()}
    assert got == {t: (added[t], removed[t]) for t in added.keys() | removed.keys()}
    first = diff.taxa.slice(0, 1).to_pylist()[0]
    assert first["added"] + first["removed"] == max(a + r for a, r in got.values())


def test_only_files_whose_content_changed_are_read(
    generations: tuple[list[MirrorFile], list[MirrorFile]],
) -> None:
    old, new = generations
    assert diff_generations(old, new).files_read == (old[1].name, old[2].name, new[1].name)


def test_a_renamed_file_with_the_same_content_changes_nothing(
    generations: tuple[list[MirrorFile], list[MirrorFile]],
) -> None:
    old, _ = generations
    renamed = [*old[:2], MirrorFile("train-00009-of-00010.parquet", old[2].sha256, old[2].path)]
    diff = diff_generations(old, renamed)
    assert (diff.added, diff.removed, diff.relabelled, diff.files_read) == (0, 0, 0, ())
    assert diff.taxa.num_rows == 0
    assert diff.to_markdown().startswith("**+0 / -0 rows**")


def test_reports_for_dagster_and_status_show_totals_and_top_taxa(
    generations: tuple[list[MirrorFile], list[MirrorFile]],
) -> None:
    diff = diff_generations(*generations)
    report = diff.to_dict(limit=3)
    assert json.loads(json.dumps(report)) == report
    assert (report["added"], report["removed"], report["relabelled"]) == (
        diff.added,
        diff.removed,
        diff.relabelled,
    )
    assert report["taxa_changed"] == diff.taxa.num_rows > 3
    assert report["taxa"] == diff.taxa.slice(0, 3).to_pylist()
    markdown = diff.to_markdown(limit=3)
    assert f"+{diff.added:,} / -{diff.removed:,} rows" in markdown
    top = diff.taxa.slice(0, 1).to_pylist()[0]
    assert f"| {top['added']:,} | {top['removed']:,} |" in markdown
    assert f"and {diff.taxa.num_rows - 3:,} more taxa" in markdown

"""Two configs hold the same uuids in the same order, whatever their file boundaries."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.validation.alignment import check_configs_aligned


def write_uuids(folder: Path, uuids: list[str], cuts: list[int]) -> list[Path]:
    """`uuids` cut into files at `cuts`, each file in several row groups."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    bounds = [0, *cuts, len(uuids)]
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        path = folder / f"train-{index:05d}.parquet"
        pq.write_table(pa.table({"uuid": uuids[start:stop]}), path, row_group_size=70)
        paths.append(path)
    return paths


UUIDS = [f"{i:032x}" for i in range(1000)]


def test_same_uuids_with_different_file_boundaries_are_aligned(tmp_path: Path) -> None:
    a = write_uuids(tmp_path / "a", UUIDS, [300, 650])
    b = write_uuids(tmp_path / "b", UUIDS, [111, 222, 800])
    result = check_configs_aligned(a, b, name_a="bioclip-2", name_b="bioclip-2.5")
    assert result.passed, result.message
    assert "1,000 uuids" in result.message


def test_the_first_mismatch_is_named_with_file_and_row_on_each_side(tmp_path: Path) -> None:
    swapped = list(UUIDS)
    swapped[700], swapped[701] = swapped[701], swapped[700]
    a = write_uuids(tmp_path / "a", UUIDS, [300, 650])
    b = write_uuids(tmp_path / "b", swapped, [111, 222, 800])
    result = check_configs_aligned(a, b, name_a="bioclip-2", name_b="bioclip-2.5")
    assert not result.passed
    assert "differ at row 700" in result.message
    assert f"{UUIDS[700]!r} (train-00002.parquet row 50)" in result.message
    assert f"{UUIDS[701]!r} (train-00002.parquet row 478)" in result.message


def test_a_config_that_ends_early_is_not_aligned(tmp_path: Path) -> None:
    a = write_uuids(tmp_path / "a", UUIDS, [500])
    b = write_uuids(tmp_path / "b", UUIDS[:990], [400])
    result = check_configs_aligned(a, b, name_a="bioclip-2", name_b="bioclip-2.5")
    assert not result.passed
    assert "bioclip-2.5 ends after 990 rows but bioclip-2 goes on" in result.message

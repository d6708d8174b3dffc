"""The per-file parts the derived tables are summed from (and the summaries' kept facts) carry a
crc32 of their bytes: a flipped byte in one still parses as Arrow, and was summed into the next
build's table (a count, a centroid) and then recorded as published. Now the build finds it,
says so, computes the part anew from its mirror file and publishes the tables of an undamaged
home."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror
from resync_testing import CONFIG, flip_a_byte
from test_derived_audit import build_all, drifted
from test_exit_codes import small_disk

from tol_dagster.derived import centroids, summaries, summary_facts, taxon_index
from tol_dagster.derived.table_audit import DERIVED_TABLES, table_path
from tol_dagster.errors import LocalStorageError, StoreError
from tol_dagster.store.file_cache import keep_table, kept_table
from tol_dagster.store.layout import Layout

__all__ = ["small_disk"]  # a fixture, imported to be found

PARTS = {
    "summary": summaries.SUMMARY_PART,
    "taxon_index": taxon_index.INDEX_PART,
    "centroids": centroids.SUMS_PART,
}


def _tables(layout: Layout) -> dict[str, pa.Table]:
    return {t: pq.read_table(table_path(layout, CONFIG, t)) for t in DERIVED_TABLES}


@pytest.fixture(scope="module")
def reference(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = Layout(tmp_path_factory.mktemp("reference") / "home")
    build_all(sample_mirror(small_sample), layout)
    return layout


def test_a_kept_table_reads_back_and_every_flipped_byte_is_found(tmp_path: Path) -> None:
    path = tmp_path / "part.arrow"
    table = pa.table({"n": list(range(50)), "name": [f"Felis {i}" for i in range(50)]})
    keep_table(path, table)
    assert kept_table(path).equals(table)
    data = path.read_bytes()

    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="crc32"):
            kept_table(path)

    feather.write_feather(table, path, compression="uncompressed")  # no crc32 after it
    with pytest.raises(ValueError, match="no crc32 follows"):
        kept_table(path)
    path.write_bytes(data[:-1])
    with pytest.raises(ValueError, match="crc32"):
        kept_table(path)


def test_a_part_written_to_a_full_disk_leaves_the_one_kept_whole(small_disk: Path) -> None:
    path = small_disk / "derived" / "part.v2.arrow"
    kept = pa.table({"n": list(range(1000))})
    keep_table(path, kept)
    filler = small_disk / "filler"
    with filler.open("wb") as out:  # all but 1 MB
        out.write(b"\0" * (shutil.disk_usage(small_disk).free - (1 << 20)))

    with pytest.raises(OSError) as raised:
        keep_table(path, pa.table({"n": list(range(1 << 20))}))  # 8 MB
    assert raised.value.errno == errno.ENOSPC
    assert kept_table(path).equals(kept)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temp file left"


@pytest.mark.parametrize("part", list(PARTS))
def test_a_flipped_byte_in_a_part_is_computed_anew_never_published(
    reference: Layout,
    small_sample: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    part: str,
) -> None:
    """The flipped byte is in the middle of the middle file's part (its data, which Arrow
    reads without complaint); every published table is then written anew from the parts."""
    files = sample_mirror(small_sample)
    home = tmp_path / "home"
    shutil.copytree(reference.home, home)
    layout = Layout(home)
    for name in (summary_facts.FACTS, summary_facts.VALUES):
        (layout.state_dir(CONFIG) / name).unlink()
    for table in ("summary/lineage", "summary/rank_counts", "taxon_index"):  # no segment copied
        table_path(layout, CONFIG, table).unlink()
    damaged = layout.derived_dir(CONFIG, files[len(files) // 2].sha256) / PARTS[part]
    flip_a_byte(damaged)

    build_all(files, layout)
    assert f"{damaged} is damaged" in caplog.text and "crc32" in caplog.text
    assert kept_table(damaged).num_rows, "computed anew, and kept with its crc32"
    assert _tables(layout) == _tables(reference)
    assert drifted(layout) == {}


def test_a_damaged_part_is_not_computed_anew_from_a_mirror_file_that_changed_on_disk(
    reference: Layout, small_sample: Path, tmp_path: Path
) -> None:
    """Its digests' rule: computed only from bytes that still hash as the gate verified them."""
    home = tmp_path / "home"
    shutil.copytree(reference.home, home)
    layout = Layout(home)
    mirror = tmp_path / "mirror"
    shutil.copytree(small_sample, mirror)
    files = sample_mirror(mirror)
    damaged = layout.derived_dir(CONFIG, files[0].sha256) / centroids.SUMS_PART
    published = table_path(layout, CONFIG, "centroids").read_bytes()
    flip_a_byte(damaged)
    flip_a_byte(files[0].path)

    with pytest.raises(StoreError, match="changed on disk") as raised:
        build_all(files, layout)
    assert str(files[0].path) in str(raised.value)
    assert not damaged.exists(), "nothing computed from the changed bytes"
    assert table_path(layout, CONFIG, "centroids").read_bytes() == published


def test_a_part_still_damaged_once_computed_anew_stops_the_build_naming_it(
    reference: Layout, small_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that damages what is written: exit 4 naming the part, the table left as it was."""
    files = sample_mirror(small_sample)
    home = tmp_path / "home"
    shutil.copytree(reference.home, home)
    layout = Layout(home)
    damaged = layout.derived_dir(CONFIG, files[0].sha256) / centroids.SUMS_PART
    published = table_path(layout, CONFIG, "centroids").read_bytes()
    real = centroids.write_parts

    def rotting(*args: object, force: bool = False) -> tuple[str, ...]:
        written = real(*args, force=force)  # type: ignore[arg-type]
        if force:  # the part computed anew
            flip_a_byte(damaged)
        return written

    flip_a_byte(damaged)
    monkeypatch.setattr(centroids, "write_parts", rotting)
    with pytest.raises(LocalStorageError, match=r"was damaged .*crc32") as raised:
        build_all(files, layout)
    assert str(damaged) in str(raised.value) and raised.value.exit_code == 4
    assert table_path(layout, CONFIG, "centroids").read_bytes() == published


def test_a_flipped_byte_in_the_kept_facts_is_a_cache_lost_not_a_count_changed(
    reference: Layout, small_sample: Path, tmp_path: Path
) -> None:
    """Bytes through the facts' rows (their groups, first and last keys, statistics): before
    the crc32 some of these flips changed a published count, most stopped the build."""
    files = sample_mirror(small_sample)
    size = (reference.state_dir(CONFIG) / summary_facts.FACTS).stat().st_size
    for at in range(size * 2 // 5, size * 4 // 5, size // 40):
        home = tmp_path / str(at)
        shutil.copytree(reference.home, home)
        layout = Layout(home)
        for table in summaries.SUMMARY_NAMES:
            table_path(layout, CONFIG, f"summary/{table}").unlink()
        facts = layout.state_dir(CONFIG) / summary_facts.FACTS
        data = bytearray(facts.read_bytes())
        data[at] ^= 0xFF
        facts.write_bytes(bytes(data))

        build_all(files, layout)
        assert _tables(layout) == _tables(reference), f"byte {at} of {size} flipped"


def test_a_part_written_removes_the_older_versions_of_itself_only(
    reference: Layout, small_sample: Path, tmp_path: Path
) -> None:
    """An upgrade that bumps a part's version leaves no dead copy of every file's part (the
    centroid sums are gigabytes at full scale) once the new version is computed."""
    files = sample_mirror(small_sample)
    home = tmp_path / "home"
    shutil.copytree(reference.home, home)
    layout = Layout(home)
    folder = layout.derived_dir(CONFIG, files[0].sha256)
    older = {"centroid_sums.v1.arrow", "summary.v2.arrow", "summary.v1.arrow"}
    kept = {"centroid_sums.v9.arrow", "centroid_sums.v1.npy", "centroid.v1.arrow", "notes.txt"}
    for name in older | kept:
        (folder / name).write_bytes(b"x" * 10)
    state = layout.state_dir(CONFIG)
    (state / "summary_facts.v2.arrow").write_bytes(b"x")
    (state / "summary_values.v2.arrow").write_bytes(b"x")
    (folder / centroids.SUMS_PART).unlink()
    (folder / summaries.SUMMARY_PART).unlink()
    (state / summary_facts.FACTS).unlink()  # as after an upgrade: no facts of this version

    build_all(files, layout)
    names = {p.name for p in folder.iterdir()}
    assert not names & older and kept <= names, names
    assert {centroids.SUMS_PART, summaries.SUMMARY_PART} <= names
    assert not (state / "summary_facts.v2.arrow").exists()
    assert not (state / "summary_values.v2.arrow").exists()
    assert (state / summary_facts.FACTS).exists()

"""The derived tables' parts are kept by their mirror file's sha256, and were computed from the
file as it was on disk: a file that rotted between its gate and its parts' first computation
(an upgrade that bumps the parts' version computes them all again, long after the gate) gave
parts of rotted bytes under the right sha256, which no resync replaced. Now a part is computed
only from a file that the gate hashed recently, or that is hashed first."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror
from resync_testing import (
    CONFIG,
    User,
    core_sync,
    dagster_home,
    flip_a_byte,
    manifest,
    synced,
    synced_home,
    user,
)
from test_derived_audit import build_all, dim_of

from tol_dagster.derived import centroids, parts, summaries, taxon_index
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.errors import StoreError
from tol_dagster.hub.client import HubClient
from tol_dagster.store import durable, file_cache, hashing, verified
from tol_dagster.store.cleanup import prune_derived
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

PARTS = (summaries.SUMMARY_PART, taxon_index.INDEX_PART, centroids.SUMS_PART)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each mirror file is hashed from here on, by name (the published tables
    are hashed too, to record them: not counted)."""
    counts: Counter[str] = Counter()
    real = hashing.sha256_file

    def counting(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
        if Path(path).name.startswith("train-"):
            counts[Path(path).name] += 1
        return real(path, on_bytes)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return counts


def _copied(sample: Path, tmp_path: Path) -> list[MirrorFile]:
    mirror = tmp_path / "mirror"
    shutil.copytree(sample, mirror)
    return sample_mirror(mirror)


def _parts(layout: Layout, files: list[MirrorFile]) -> list[Path]:
    return [layout.derived_dir(CONFIG, f.sha256) / p for f in files for p in PARTS]


def _drop_parts(layout: Layout, files: list[MirrorFile]) -> None:
    """What an upgrade that bumps the parts' version leaves: no part of the current version."""
    for path in _parts(layout, files):
        path.unlink()


def test_parts_are_not_computed_from_mirror_files_that_rotted_since_their_gate(
    small_sample: Path, tmp_path: Path
) -> None:
    """The scenario the last note tried by hand: every mirror file's middle byte flipped, its
    size and mtime kept, parts computed long after the gate. Before, the build exited 0."""
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    for file in files:
        flip_a_byte(file.path)

    with pytest.raises(StoreError, match="changed on disk") as raised:
        build_all(files, layout)
    assert str(files[0].path) in str(raised.value) and "tol-dagster sync" in str(raised.value)
    assert not [p for p in _parts(layout, files) if p.exists()], "nothing computed from them"


def test_a_file_is_hashed_once_for_its_parts_and_not_again_while_its_note_is_recent(
    small_sample: Path, tmp_path: Path, hashed: Counter[str]
) -> None:
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    names = {f.name: 1 for f in files}

    build_all(files, layout)
    assert hashed == names, "once for the three parts"
    hashed.clear()
    _drop_parts(layout, files)
    build_all(files, layout)
    assert hashed == {}, "noted minutes ago: not hashed again"

    aged = time.time() - verified.RECENT_SECONDS - 60
    for file in files:
        note = verified.note_path(layout, CONFIG, file.sha256)
        note.write_text(json.dumps(json.loads(note.read_text()) | {"at": aged}))
    _drop_parts(layout, files)
    build_all(files, layout)
    assert hashed == names, "a note older than RECENT_SECONDS: hashed again"

    hashed.clear()
    replaced = files[1].path.with_suffix(".new")
    shutil.copy2(files[1].path, replaced)  # the same bytes and mtime, another file
    replaced.rename(files[1].path)
    _drop_parts(layout, files)
    build_all(files, layout)
    assert hashed == {files[1].name: 1}, "a note is of the file it hashed"


def test_a_note_from_another_machines_mount_of_the_file_spares_its_hash(
    small_sample: Path, tmp_path: Path, hashed: Counter[str]
) -> None:
    """A network filesystem gives each machine's mount its own device number: the gate's note,
    written on one machine, names the file the parts' worker sees on another."""
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    build_all(files, layout)
    for file in files:
        note = verified.note_path(layout, CONFIG, file.sha256)
        written = json.loads(note.read_text())
        device, *same_file = written["version"]
        note.write_text(json.dumps(written | {"version": [device + 1, *same_file]}))
    hashed.clear()
    _drop_parts(layout, files)

    build_all(files, layout)

    assert hashed == {}, "the same inode, size and mtime: the note stands"
    assert all(p.exists() for p in _parts(layout, files))


def test_a_damaged_note_is_no_note_and_one_that_cannot_be_written_fails_nothing(
    small_sample: Path, tmp_path: Path, hashed: Counter[str]
) -> None:
    """Notes are written without fsync: a torn one must cost a re-hash, never a verdict."""
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    build_all(files, layout)
    torn, blocked = (verified.note_path(layout, CONFIG, f.sha256) for f in files[:2])
    torn.write_bytes(torn.read_bytes()[:9])
    blocked.unlink()
    blocked.mkdir()  # where the note would go: no write can replace it

    for _ in range(2):
        hashed.clear()
        _drop_parts(layout, files)
        build_all(files, layout)
        assert all(p.exists() for p in _parts(layout, files))
    # The torn note was rewritten in the first round; the blocked file, never noted, is hashed
    # again for each of its three parts, before it is read and before its part is kept.
    assert hashed == {files[1].name: 6}
    assert json.loads(torn.read_text())["at"] > 0


def test_a_damaged_part_is_computed_anew_only_after_its_file_is_hashed_however_recent_its_note(
    small_sample: Path, tmp_path: Path
) -> None:
    """The disk that rotted the part may have rotted the file since the note."""
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    build_all(files, layout)
    part = layout.derived_dir(CONFIG, files[0].sha256) / centroids.SUMS_PART
    flip_a_byte(part)
    flip_a_byte(files[0].path)

    with pytest.raises(StoreError, match="changed on disk"):
        build_all(files, layout)
    assert not part.exists()


def test_the_gate_notes_the_files_it_hashed(
    small_sample: Path, tmp_path: Path, hashed: Counter[str]
) -> None:
    root = tmp_path / "root"
    shutil.copytree(small_sample, root)
    layout = Layout(tmp_path / "home")
    with LocalHub(root) as hub:
        core_sync(layout, HubClient(hub.endpoint, hub.repo_id, None))
    folder = layout.mirror_dir(CONFIG)
    files = [MirrorFile(e.name, e.sha256, folder / e.name) for e in manifest(layout).entries]
    now = time.time()
    assert all(verified.recently_verified(layout, CONFIG, f, now, 600) for f in files)

    hashed.clear()
    build_all(files, layout)
    assert hashed == {}, "parts computed right after the gate hash nothing more"


def test_a_slice_on_a_mirror_that_rotted_since_its_gate_stops_naming_the_file(
    synced: User,
) -> None:
    """Through the command line and Dagster's steps: the exit code of the store's error (2),
    its message naming the file and the mend, no part kept (a copied home: notes of no use)."""
    layout = synced.layout
    files = [
        MirrorFile(e.name, e.sha256, layout.mirror_dir(CONFIG) / e.name)
        for e in manifest(layout).entries
    ]
    for file in files:
        flip_a_byte(file.path)

    outcome = synced.tol("slice", "family=Felidae")
    assert outcome.code == 2, outcome.text
    assert "changed on disk" in outcome.text and "tol-dagster sync" in outcome.text
    assert not [p for p in _parts(layout, files) if p.exists()]


def _published(layout: Layout) -> dict[str, pa.Table]:
    """Every derived table as published (the summaries, the index, the centroids)."""
    paths = {name: summaries.summary_path(layout, CONFIG, name) for name in summaries.SUMMARY_NAMES}
    paths |= {"taxon_index": layout.taxon_index_path(CONFIG)}
    return {name: pq.read_table(path) for name, path in paths.items()} | {
        "centroids": pq.read_table(layout.centroids_path(CONFIG))
    }


def _family_of_its_own(file: MirrorFile, others: list[MirrorFile]) -> str:
    """A family with rows in `file` and in none of `others`."""
    elsewhere = {
        v for f in others for v in pq.read_table(f.path, columns=["family"])[0].to_pylist()
    }
    mine = set(pq.read_table(file.path, columns=["family"])[0].to_pylist()) - elsewhere - {None}
    return sorted(mine)[0]


def test_what_was_computed_from_a_file_before_it_drifted_goes_with_its_repair(
    synced: User, small_sample: Path, tmp_path: Path
) -> None:
    """Parts computed from bytes that later drifted (before notes existed, or within a note's
    window) are kept under the file's right sha256, which the fresh copy has too: they, the
    summaries' facts and the published segments keyed by that sha256 outlived the repair. The
    forgery: one file's three parts computed from another file's bytes."""
    layout = synced.layout
    files = [
        MirrorFile(e.name, e.sha256, layout.mirror_dir(CONFIG) / e.name)
        for e in manifest(layout).entries
    ]
    wrong, donor = files[1], files[2]
    verified.note_verified(layout, CONFIG, wrong.sha256, donor.path.stat(), time.time())
    forged = [MirrorFile(wrong.name, wrong.sha256, donor.path)]
    summaries.write_parts(forged, layout, CONFIG)
    taxon_index.write_parts(forged, layout, CONFIG)
    centroids.write_parts(forged, layout, CONFIG, dim_of(files))
    reference = Layout(tmp_path / "reference")
    build_all(sample_mirror(small_sample), reference)
    expected = _published(reference)
    key = f"family={_family_of_its_own(files[0], files[1:])}"  # its slice reads no forged entry
    assert synced.tol("slice", key).code == 0
    assert _published(layout)["lineage"] != expected["lineage"], "the forgery was published"

    flip_a_byte(wrong.path)
    assert synced.tol("audit").code == 4
    repaired = synced.sync()
    assert repaired.code == 0, repaired.text
    assert f"{wrong.name}: what was computed from its drifted copy is dropped" in repaired.text
    outcome = synced.tol("slice", key)
    assert outcome.code == 0, outcome.text

    found = _published(layout)
    assert found.keys() == expected.keys()
    for name, table in expected.items():
        assert found[name].equals(table), name


def test_a_part_gone_once_the_build_computed_the_parts_is_computed_anew_where_read(
    small_sample: Path, tmp_path: Path, hashed: Counter[str]
) -> None:
    """A resync that fetches a drifted file again drops its parts, maybe while a build that
    has already computed its parts runs: the build reads the part computed anew, from the
    file hashed first, as it would a damaged one."""
    files = _copied(small_sample, tmp_path)
    layout = Layout(tmp_path / "home")
    build_all(files, layout)
    part = layout.derived_dir(CONFIG, files[0].sha256) / summaries.SUMMARY_PART
    kept = file_cache.kept_table(part)
    part.unlink()
    hashed.clear()

    def recompute() -> None:
        summaries.write_parts([files[0]], layout, CONFIG, force=True)

    table = parts.read_part(layout, CONFIG, files[0], summaries.SUMMARY_PART, recompute)
    assert table.num_rows and table.equals(kept) and file_cache.kept_table(part).equals(kept)
    assert hashed == {files[0].name: 1}, "the file hashed before, however recent its note"
    assert file_cache.kept_crc32(part) == int.from_bytes(part.read_bytes()[-13:-9], "little")


def test_a_forget_killed_midway_leaves_no_result_under_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resync's forget is killed after it removed one result: the others must not be
    found under the sha256 (the next sync may find the file repaired and forget nothing)."""
    layout = Layout(tmp_path / "home")
    sha256 = "ab" * 32
    folder = layout.derived_dir(CONFIG, sha256)
    folder.mkdir(parents=True)
    for name in PARTS:
        (folder / name).write_bytes(b"computed from drifted bytes")
    real = file_cache.remove_tree

    def killed(path: Path) -> int:
        if not path.is_dir():
            return real(path)
        real(sorted(path.iterdir())[0])
        raise KeyboardInterrupt  # as a SIGKILL would stop it, mid-removal

    monkeypatch.setattr(file_cache, "remove_tree", killed)
    with pytest.raises(KeyboardInterrupt):
        file_cache.forget_content(layout, CONFIG, sha256)
    assert not folder.exists()
    leftover = list(folder.parent.iterdir())
    assert [p.name for p in leftover] == [f"{sha256}.forgotten"]

    monkeypatch.setattr(file_cache, "remove_tree", real)
    assert prune_derived(layout, CONFIG, {sha256}) > 0 and not list(folder.parent.iterdir())
    assert file_cache.forget_content(layout, CONFIG, sha256) is False


def _rotted_under_a_recent_note(
    sample: Path, tmp_path: Path
) -> tuple[list[MirrorFile], Layout, MirrorFile]:
    """Built, parts dropped, then the first file rotted: its note still matches (mtime and
    size kept), so a build trusts it."""
    files = _copied(sample, tmp_path)
    layout = Layout(tmp_path / "home")
    build_all(files, layout)
    _drop_parts(layout, files)
    flip_a_byte(files[0].path)
    return files, layout, files[0]


def test_a_part_computed_while_a_resync_forgot_its_content_is_not_kept(
    small_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that trusted a recent note of a file that has rotted since, and a resync that
    found the file drifted and dropped its content's results while the build read it: the
    part the build computed from the rotted bytes must not land under the sha256."""
    files, layout, rotten = _rotted_under_a_recent_note(small_sample, tmp_path)
    scan = summaries._counts

    def with_a_resync_meanwhile(stale: Any) -> Any:
        counts = scan(stale)
        file_cache.forget_content(layout, CONFIG, rotten.sha256)
        return counts

    monkeypatch.setattr(summaries, "_counts", with_a_resync_meanwhile)
    with pytest.raises(StoreError, match="changed on disk"):
        summaries.write_parts(files, layout, CONFIG)
    assert not (layout.derived_dir(CONFIG, rotten.sha256) / summaries.SUMMARY_PART).exists()


def _forget_before_the_write(
    monkeypatch: pytest.MonkeyPatch, forget: Callable[[Path], None]
) -> None:
    keep = parts.keep_table

    def keep_after_a_forget(path: Path, table: pa.Table) -> None:
        forget(path)
        keep(path, table)

    monkeypatch.setattr(parts, "keep_table", keep_after_a_forget)


def _forget_during_the_write(
    monkeypatch: pytest.MonkeyPatch, forget: Callable[[Path], None]
) -> None:
    fsync_file = durable.fsync_file

    def fsync_after_a_forget(path: Path) -> None:
        if path.name.startswith(durable.TEMP_PREFIX):  # the part's temp file, not yet renamed
            forget(path)
        fsync_file(path)

    monkeypatch.setattr(durable, "fsync_file", fsync_after_a_forget)


@pytest.mark.parametrize("when", [_forget_before_the_write, _forget_during_the_write])
def test_a_forget_between_the_last_check_of_the_note_and_the_part_landing_keeps_no_part(
    small_sample: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: Callable[[pytest.MonkeyPatch, Callable[[Path], None]], None],
) -> None:
    """The resync drops the content after `write_part` found the note standing: before the
    write, which recreates the folder (the part of rotted bytes would land there, with no note
    to say it was never checked again), or between the part's temp file and its rename (the
    temp file goes with its folder: a `FileNotFoundError` of a temp name, not the store's)."""
    files, layout, rotten = _rotted_under_a_recent_note(small_sample, tmp_path)
    folder = layout.derived_dir(CONFIG, rotten.sha256)

    def forget(path: Path) -> None:
        if path.parent == folder:
            file_cache.forget_content(layout, CONFIG, rotten.sha256)

    when(monkeypatch, forget)
    with pytest.raises(StoreError, match="changed on disk"):
        summaries.write_parts(files, layout, CONFIG)
    assert not (folder / summaries.SUMMARY_PART).exists()

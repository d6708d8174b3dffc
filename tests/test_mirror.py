"""The published mirror: hard-linked generations behind one symlink, staging, cleanup, audit."""

from __future__ import annotations

import glob
import hashlib
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tol_dagster.errors import DiskSpaceError, StoreError
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.resync.plan import bytes_still_needed, plan_sync
from tol_dagster.store.cleanup import STALE_TEMP_S, cleanup, prune_derived
from tol_dagster.store.disk import check_free_disk
from tol_dagster.store.drift import audit_mirror
from tol_dagster.store.durable import TEMP_PREFIX, TEMP_SUFFIX
from tol_dagster.store.generations import (
    current_generation,
    previous_generation,
    publish_generation,
)
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, ManifestEntry, save_manifest
from tol_dagster.store.quarantine import list_quarantine, quarantine
from tol_dagster.store.staging import partial_path, stage_path, staged_files

CONFIG = "bioclip-2_float16"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "home")


def stage(layout: Layout, commit: str, files: dict[str, bytes]) -> dict[str, Path]:
    """Write files as if fetched and verified for `commit`."""
    staged = {}
    for name, content in files.items():
        path = stage_path(layout, CONFIG, commit, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        staged[name] = path
    return staged


def mirror_glob(layout: Layout) -> dict[str, bytes]:
    """What a consumer sees: the card's glob over the mirror."""
    paths = glob.glob(str(layout.home / "mirror" / CONFIG / "*.parquet"))
    return {Path(p).name: Path(p).read_bytes() for p in paths}


def manifest_of(layout: Layout, generation: Path, commit: str) -> Manifest:
    entries = tuple(
        ManifestEntry(
            p.name, f"{CONFIG}/{p.name}", sha256_file(p), p.stat().st_size, 1, commit, "t"
        )
        for p in generation.iterdir()
    )
    return Manifest(CONFIG, "o/r", commit, generation.name, None, None, "t", entries)


V1 = {"a.parquet": b"a" * 100, "b.parquet": b"b" * 200, "c.parquet": b"c" * 300}


def test_first_publish_shows_exactly_the_files_through_the_symlink(layout: Layout) -> None:
    assert current_generation(layout, CONFIG) is None
    generation = publish_generation(layout, CONFIG, commit="c1" * 20, files=stage(layout, "c1", V1))
    assert layout.mirror_dir(CONFIG).is_symlink()
    assert current_generation(layout, CONFIG) == generation
    assert generation.parent == layout.generations_dir(CONFIG)
    assert generation.name == "c1c1c1c1c1c1-1"
    assert mirror_glob(layout) == V1
    assert sorted(os.listdir(layout.mirror_dir(CONFIG))) == sorted(V1)


def test_publish_hard_links_staged_and_unchanged_files(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    changed = stage(layout, "c2", {"b.parquet": b"B" * 250})
    files = {"a.parquet": first / "a.parquet", "c.parquet": first / "c.parquet", **changed}
    second = publish_generation(layout, CONFIG, commit="c2", files=files)
    for name in ("a.parquet", "c.parquet"):
        assert os.stat(second / name).st_ino == os.stat(first / name).st_ino
        assert (
            os.stat(second / name).st_ino == os.stat(stage_path(layout, CONFIG, "c1", name)).st_ino
        )
    assert os.stat(second / "b.parquet").st_ino == os.stat(changed["b.parquet"]).st_ino
    assert mirror_glob(layout) == {**V1, "b.parquet": b"B" * 250}


def test_a_file_removed_upstream_leaves_the_mirror(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    publish_generation(layout, CONFIG, commit="c2", files={"a.parquet": first / "a.parquet"})
    assert mirror_glob(layout) == {"a.parquet": V1["a.parquet"]}


def test_readers_see_one_whole_generation_at_every_instant(layout: Layout) -> None:
    odd = stage(layout, "c1", V1)
    even = stage(layout, "c2", {"a.parquet": b"x", "d.parquet": b"y"})
    publish_generation(layout, CONFIG, commit="c1", files=odd)
    seen: list[frozenset[str]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(
                frozenset(Path(p).name for p in glob.glob(str(layout.mirror_dir(CONFIG) / "*")))
            )

    def wait_for_reads(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            wait_for_reads(len(seen) + 2)  # the reader runs across every switch
            publish_generation(layout, CONFIG, commit=f"c{i}", files=even if i % 2 == 0 else odd)
    finally:
        stop.set()
        reader.join()
    assert set(seen) == {frozenset(V1), frozenset({"a.parquet", "d.parquet"})}
    assert not [p for p in (layout.home / "mirror").iterdir() if p.name != CONFIG]


def test_previous_generation_is_the_one_published_just_before(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    assert previous_generation(layout, CONFIG) is None
    second = publish_generation(layout, CONFIG, commit="c2", files=stage(layout, "c2", V1))
    assert previous_generation(layout, CONFIG) == first
    publish_generation(layout, CONFIG, commit="c3", files=stage(layout, "c3", V1))
    assert previous_generation(layout, CONFIG) == second


def test_a_crashed_publish_is_not_taken_for_the_previous_generation(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    leftover = layout.generations_dir(CONFIG) / "c2-2"  # built, then the process died
    leftover.mkdir()
    (leftover / "a.parquet").write_bytes(b"half")
    third = publish_generation(layout, CONFIG, commit="c3", files=stage(layout, "c3", V1))
    assert third.name == "c3-3"
    assert previous_generation(layout, CONFIG) == first
    assert not leftover.exists()


def test_a_failing_publish_leaves_the_published_generation_alone(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    files = {
        **stage(layout, "c2", {"a.parquet": b"new"}),
        "b.parquet": layout.home / "gone.parquet",
    }
    with pytest.raises(FileNotFoundError):
        publish_generation(layout, CONFIG, commit="c2", files=files)
    assert current_generation(layout, CONFIG) == first
    assert mirror_glob(layout) == V1
    assert [p.name for p in layout.generations_dir(CONFIG).iterdir()] == [first.name]


def test_a_real_folder_at_the_mirror_path_is_refused_untouched(layout: Layout) -> None:
    own = layout.mirror_dir(CONFIG)
    own.mkdir(parents=True)
    (own / "mine.parquet").write_bytes(b"user data")
    with pytest.raises(StoreError, match="real folder") as caught:
        publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    assert str(own) in str(caught.value)
    assert not own.is_symlink()
    assert [p.name for p in own.iterdir()] == ["mine.parquet"]
    assert (own / "mine.parquet").read_bytes() == b"user data"
    assert not layout.generations_dir(CONFIG).exists()


@pytest.mark.parametrize("name", ["README.md", ".hidden.parquet", "sub/a.parquet", ""])
def test_only_plain_parquet_names_can_be_published(layout: Layout, name: str) -> None:
    source = layout.home / "x"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="parquet"):
        publish_generation(layout, CONFIG, commit="c1", files={name: source})
    assert current_generation(layout, CONFIG) is None


def test_staged_files_are_those_of_the_commit_only(layout: Layout) -> None:
    stage(layout, "c1", {"a.parquet": b"1"})
    staged = stage(layout, "c2", {"b.parquet": b"2", "c.parquet": b"3"})
    (layout.staging_dir(CONFIG, "c2") / ".b.parquet.tmp").write_bytes(b"half")
    assert staged_files(layout, CONFIG, "c2") == staged
    assert staged_files(layout, CONFIG, "c3") == {}


def test_bytes_still_needed_skips_staged_files_and_resumes_partials(layout: Layout) -> None:
    files = {"a.parquet": b"a" * 1000, "b.parquet": b"b" * 2000, "c.parquet": b"c" * 4000}
    listed = tuple(
        RemoteFile(f"{CONFIG}/{n}", len(c), hashlib.sha256(c).hexdigest()) for n, c in files.items()
    )
    plan = plan_sync(None, RemoteConfig("o/r", CONFIG, "c1", listed, None))
    assert bytes_still_needed(layout, CONFIG, plan) == 7000
    stage(layout, "c1", {"a.parquet": files["a.parquet"]})
    partial = partial_path(layout, CONFIG, hashlib.sha256(files["c.parquet"]).hexdigest())
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"c" * 1500)
    assert bytes_still_needed(layout, CONFIG, plan) == 2000 + 2500


def test_free_disk_check_names_the_folder_the_need_and_the_fix(layout: Layout) -> None:
    target = layout.store_dir(CONFIG)  # does not exist yet: the check probes its parents
    check_free_disk(target, 1024)
    check_free_disk(target, 0)
    with pytest.raises(DiskSpaceError) as caught:
        check_free_disk(target, 10**18)
    message = str(caught.value)
    assert str(target) in message
    assert str(10**18) in message
    assert "free" in message
    assert "TOL_HOME" in message


def test_the_margin_is_part_of_the_need(layout: Layout) -> None:
    import shutil

    free = shutil.disk_usage(layout.home.parent).free
    check_free_disk(layout.home, free // 2, margin=0.05)
    with pytest.raises(DiskSpaceError):
        check_free_disk(layout.home, free // 2, margin=1.5)


def test_quarantine_moves_the_file_and_records_why(layout: Layout) -> None:
    staged = stage(layout, "c1", {"a.parquet": b"broken"})["a.parquet"]
    target = quarantine(
        layout, CONFIG, staged, "rows not sorted: row 7 before row 6", sha256="f" * 64
    )
    assert not staged.exists()
    assert target.parent == layout.quarantine_dir(CONFIG)
    assert target.name == "a.parquet." + "f" * 12
    assert target.read_bytes() == b"broken"
    reason_text = target.with_name(target.name + ".reason.txt").read_text()
    assert "rows not sorted: row 7 before row 6" in reason_text
    assert str(staged) in reason_text
    [listed] = list_quarantine(layout, CONFIG)
    assert (listed.path, listed.reason, listed.size) == (
        target,
        "rows not sorted: row 7 before row 6",
        6,
    )


def test_quarantine_without_a_hash_is_named_by_time(layout: Layout) -> None:
    first = quarantine(
        layout, CONFIG, stage(layout, "c1", {"a.parquet": b"1"})["a.parquet"], "truncated"
    )
    second = quarantine(
        layout, CONFIG, stage(layout, "c1", {"a.parquet": b"2"})["a.parquet"], "truncated"
    )
    assert first != second
    assert [q.path for q in list_quarantine(layout, CONFIG)] == [first, second]


def test_a_published_file_cannot_be_quarantined(layout: Layout) -> None:
    generation = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    with pytest.raises(StoreError, match="published mirror"):
        quarantine(layout, CONFIG, layout.mirror_dir(CONFIG) / "a.parquet", "drift")
    assert (generation / "a.parquet").exists()


def test_cleanup_removes_what_killed_slice_writers_left_once_stale(layout: Layout) -> None:
    """A rank worker killed with its deferred renames queued leaves finished temp files in the
    slices' and records' folders; a live writer's are recent and stay."""
    folders = (
        layout.published_dir(CONFIG), layout.slices_dir(CONFIG), layout.slice_records_dir(CONFIG)
    )  # fmt: skip
    stale, fresh = [], []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        old = folder / f"{TEMP_PREFIX}family=Felidae.parquet.x1{TEMP_SUFFIX}"
        old.write_bytes(b"o" * 5)
        os.utime(old, (0, time.time() - STALE_TEMP_S - 60))
        new = folder / f"{TEMP_PREFIX}family=Canidae.parquet.x2{TEMP_SUFFIX}"
        new.write_bytes(b"n")
        stale.append(old)
        fresh.append(new)
    published = layout.slices_dir(CONFIG) / "family=Felidae.parquet"
    published.write_bytes(b"s")
    os.utime(published, (0, 0))

    report = cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)

    assert sorted(report.temporary) == sorted(stale)
    assert all(p.exists() for p in fresh) and published.exists()


def test_cleanup_keeps_current_and_previous_and_frees_the_rest(layout: Layout) -> None:
    gens: list[Path] = []
    for i in (1, 2, 3):
        files = stage(layout, f"c{i}", {"a.parquet": str(i).encode() * 1000})
        unchanged = (
            {"b.parquet": gens[-1] / "b.parquet"}
            if gens
            else stage(layout, "c1", {"b.parquet": b"b" * 50})
        )
        gens.append(
            publish_generation(layout, CONFIG, commit=f"c{i}", files={**files, **unchanged})
        )
    wanted, unwanted = "1" * 64, "2" * 64
    partial_path(layout, CONFIG, wanted).parent.mkdir(parents=True)
    partial_path(layout, CONFIG, wanted).write_bytes(b"w" * 70)
    partial_path(layout, CONFIG, unwanted).write_bytes(b"u" * 300)
    old = quarantine(
        layout, CONFIG, stage(layout, "c9", {"q.parquet": b"q" * 40})["q.parquet"], "bad"
    )
    old_reason = old.with_name(old.name + ".reason.txt")
    os.utime(old_reason, (0, (datetime.now(UTC) - timedelta(days=31)).timestamp()))
    young = quarantine(layout, CONFIG, stage(layout, "c9", {"y.parquet": b"y"})["y.parquet"], "bad")
    temp = layout.store_dir(CONFIG) / ".manifest.json.abc.tmp"
    temp.write_bytes(b"t" * 9)
    reason_size = old_reason.stat().st_size

    report = cleanup(layout, CONFIG, keep_commit="c3", wanted_sha256s={wanted}, grace_s=0)

    assert report.generations == (gens[0],)
    assert [p.name for p in report.staging] == ["c1", "c2", "c9"]
    assert report.partials == (partial_path(layout, CONFIG, unwanted),)
    assert report.quarantined == (old, old_reason)
    assert report.temporary == (temp,)
    # a1 had links in generation 1 and staging c1 only; b, a2, a3 are still linked elsewhere.
    assert report.bytes_freed == 1000 + 300 + 40 + reason_size + 9
    assert sorted(p.name for p in layout.generations_dir(CONFIG).iterdir()) == [
        gens[1].name,
        gens[2].name,
    ]
    assert [p.name for p in layout.staging_dir(CONFIG, "c3").parent.iterdir()] == ["c3"]
    assert partial_path(layout, CONFIG, wanted).exists()
    assert [q.path for q in list_quarantine(layout, CONFIG)] == [young]
    assert mirror_glob(layout) == {"a.parquet": b"3" * 1000, "b.parquet": b"b" * 50}
    again = cleanup(layout, CONFIG, keep_commit="c3", wanted_sha256s={wanted}, grace_s=0)
    assert (again.removed, again.bytes_freed) == ((), 0)


def test_cleanup_keeps_the_generation_the_manifest_names(layout: Layout) -> None:
    gens = [
        publish_generation(layout, CONFIG, commit=f"c{i}", files=stage(layout, f"c{i}", V1))
        for i in (1, 2, 3)
    ]
    save_manifest(layout, manifest_of(layout, gens[0], "c1"))  # e.g. a crash before its save
    report = cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
    assert report.generations == ()
    assert [p.name for p in report.staging] == ["c1", "c2", "c3"]


def test_cleanup_can_keep_quarantine_forever(layout: Layout) -> None:
    kept = quarantine(layout, CONFIG, stage(layout, "c1", {"q.parquet": b"q"})["q.parquet"], "bad")
    far_future = datetime.now(UTC) + timedelta(days=3650)
    assert (
        cleanup(
            layout,
            CONFIG,
            keep_commit=None,
            wanted_sha256s=(),
            grace_s=0,
            quarantine_max_age_days=None,
            now=far_future,
        ).quarantined
        == ()
    )
    assert kept.exists()
    assert (
        cleanup(
            layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0, now=far_future
        ).quarantined
        != ()
    )


def test_cleanup_removes_step_outputs_of_runs_untouched_for_a_week(layout: Layout) -> None:
    old, recent = (layout.step_outputs_dir() / run for run in ("old-run", "recent-run"))
    for run in (old, recent):
        (run / "fetch").mkdir(parents=True)
        (run / "fetch" / "result").write_bytes(b"12345")
    week_ago = (datetime.now(UTC) - timedelta(days=7, minutes=1)).timestamp()
    os.utime(old, (week_ago, week_ago))
    report = cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
    assert (report.steps, report.bytes_freed) == ((old,), 5)
    assert not old.exists() and (recent / "fetch" / "result").exists()


def test_audit_of_an_intact_mirror_is_clean(layout: Layout) -> None:
    generation = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    report = audit_mirror(layout, CONFIG, manifest_of(layout, generation, "c1"))
    assert report.ok
    assert (report.files_checked, report.bytes_hashed) == (3, 600)


def test_audit_finds_edits_bit_rot_missing_and_extra_files(layout: Layout) -> None:
    generation = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    manifest = manifest_of(layout, generation, "c1")
    for name, content in (("a.parquet", b"A" * 100), ("b.parquet", b"edited")):  # rot, then an edit
        os.chmod(generation / name, 0o644)
        (generation / name).write_bytes(content)
    (generation / "c.parquet").unlink()
    (generation / "extra.parquet").write_bytes(b"x")
    report = audit_mirror(layout, CONFIG, manifest)
    reasons = {d.name: d.reason for d in report.drifted}
    assert set(reasons) == {"a.parquet", "b.parquet", "c.parquet", "extra.parquet"}
    assert hashlib.sha256(b"A" * 100).hexdigest() in reasons["a.parquet"]
    assert "6 bytes on disk, the manifest says 200" in reasons["b.parquet"]
    assert "missing" in reasons["c.parquet"]
    assert "not in the manifest" in reasons["extra.parquet"]
    assert not report.ok
    listed = tuple(RemoteFile(e.path, e.size, e.sha256) for e in manifest.entries)
    upstream = RemoteConfig("o/r", CONFIG, "c1", listed, None)
    assert plan_sync(manifest, upstream).is_noop  # the manifest alone cannot see the drift
    refetch = plan_sync(manifest, upstream, drifted=reasons)
    assert [f.name for f in refetch.to_fetch] == ["a.parquet", "b.parquet", "c.parquet"]
    assert refetch.repaired == refetch.to_fetch and not refetch.unchanged


def test_published_files_are_read_only(layout: Layout) -> None:
    generation = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    assert all((p.stat().st_mode & 0o222) == 0 for p in generation.iterdir())


def test_audit_reports_a_mirror_that_disagrees_with_the_manifest(layout: Layout) -> None:
    first = publish_generation(layout, CONFIG, commit="c1", files=stage(layout, "c1", V1))
    publish_generation(layout, CONFIG, commit="c2", files=stage(layout, "c2", V1))
    report = audit_mirror(layout, CONFIG, manifest_of(layout, first, "c1"))
    assert [d.name for d in report.drifted] == [f"mirror/{CONFIG}"]
    assert first.name in report.drifted[0].reason


def test_audit_without_a_published_mirror(layout: Layout) -> None:
    manifest = Manifest(CONFIG, "o/r", "c1", "c1-1", None, None, "t", ())
    report = audit_mirror(layout, CONFIG, manifest)
    assert [d.name for d in report.drifted] == [f"mirror/{CONFIG}"]


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big"
    content = os.urandom(9 * 1024 * 1024 + 17)  # crosses the 8 MiB chunk boundary
    path.write_bytes(content)
    assert sha256_file(path) == hashlib.sha256(content).hexdigest()


def test_prune_derived_keeps_results_of_kept_contents_only(layout: Layout) -> None:
    keep, drop = "a" * 64, "b" * 64
    for sha in (keep, drop):
        folder = layout.derived_dir(CONFIG, sha)
        folder.mkdir(parents=True)
        (folder / "facts.json").write_bytes(b"x" * 100)
    freed = prune_derived(layout, CONFIG, {keep})
    assert freed == 100
    assert layout.derived_dir(CONFIG, keep).is_dir()
    assert not layout.derived_dir(CONFIG, drop).exists()

"""Pinned reads: a reader of `catalog.mirror_files()` sees one generation whatever publishes run
meanwhile; superseded generations stay for TOL_GENERATION_GRACE_S and while a run holds a lease;
a derived build that a publish interrupts caches results under the sha256 of the bytes it read.

Every generation's files carry a marker column naming the generation's content, so a query that
mixed two generations is caught by its markers and by its row count.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mirror_testing import resync_one_file
from resync_testing import CONFIG, synced_home

from tol_dagster import catalog
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.published.definitions import build_published_assets
from tol_dagster.defs.published.partitions import slices_partitions_name
from tol_dagster.defs.resources import resources_from
from tol_dagster.derived import summaries, taxon_index
from tol_dagster.errors import StoreError
from tol_dagster.resync.gate import run_gate
from tol_dagster.resync.state import StagedFile, StagedState
from tol_dagster.settings import Settings, generation_grace_s
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store import cleanup, generations
from tol_dagster.store.file_cache import derived_path, kept_table
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest, save_manifest
from tol_dagster.store.pins import read_record

__all__ = ["synced_home"]  # a fixture, imported to be found

REPO = Path(__file__).resolve().parents[1]
#: Rows per file of each content: the totals differ, so a mix shows in the count too.
CONTENT = {"A": (100, 200, 300), "B": (150, 250)}
NAMES = ("a.parquet", "b.parquet", "c.parquet")


def resources_of(home: Path) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources for `home` (the Hub's endpoint only names commit links)."""
    return resources_from(Settings(home=home))


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.delenv("TOL_GENERATION_GRACE_S", raising=False)
    return Layout(tmp_path / "home")


def write_content(layout: Layout, marker: str) -> dict[str, Path]:
    """Files whose every row says `marker` (outside the store: cleanup removes staging)."""
    staged = {}
    for name, rows in zip(NAMES, CONTENT[marker], strict=False):
        path = layout.home.parent / "verified" / marker / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a new inode: the old one is linked into a generation
        table = pa.table({"marker": [marker] * rows, "row": list(range(rows))})
        pq.write_table(table, path, row_group_size=50)
        staged[name] = path
    return staged


def publish(layout: Layout, marker: str, sources: dict[str, Path]) -> Path:
    return generations.publish_generation(layout, CONFIG, commit=marker, files=sources)


def markers_of(paths: list[Path], between: Callable[[], None] = lambda: None) -> list[str]:
    """Each file's distinct markers, reading one file at a time and calling `between` after the
    first: the window in which a publish lands mid-query."""
    seen: list[str] = []
    for i, path in enumerate(paths):
        seen += pq.read_table(path).column("marker").unique().to_pylist()
        if i == 0:
            between()
    return seen


# --- readers of mirror_files() under publishes ----------------------------------------------------


def test_a_reader_of_mirror_files_sees_one_generation_while_20_publishes_run(
    layout: Layout,
) -> None:
    contents = {marker: write_content(layout, marker) for marker in CONTENT}
    publish(layout, "A", contents["A"])
    mid_query, published = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def publisher() -> None:
        try:
            for i in range(20):
                assert mid_query.wait(20), "the reader stopped"
                mid_query.clear()
                publish(layout, "B" if i % 2 == 0 else "A", contents["B" if i % 2 == 0 else "A"])
                cleanup.cleanup(
                    layout,
                    CONFIG,
                    keep_commit=None,
                    wanted_sha256s=(),
                    grace_s=generation_grace_s(),
                )
                published.set()
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            published.set()

    def publish_now() -> None:
        published.clear()
        mid_query.set()
        assert published.wait(20) and not failures, failures

    thread = threading.Thread(target=publisher)
    thread.start()
    queries, through_symlink = [], []
    try:
        for _ in range(20):
            paths = catalog.mirror_files(CONFIG, layout.home)
            markers = markers_of(paths, between=publish_now)
            # The same query through the symlink, after the switch: the window is real.
            linked = [layout.mirror_dir(CONFIG) / p.name for p in paths]
            through_symlink.append(markers_of([q for q in linked if q.exists()]))
            [rows] = duckdb.execute(
                "SELECT list(DISTINCT marker), count(*) FROM read_parquet(?)",
                [[str(p) for p in paths]],
            ).fetchall()
            queries.append((markers, rows))
    finally:
        mid_query.set()
        thread.join(30)
    assert not failures, failures
    assert len(queries) == 20
    for markers, (distinct, count) in queries:
        assert len(set(markers)) == 1, markers  # never a mix
        assert distinct == markers[:1]
        assert count == sum(CONTENT[markers[0]])
    assert {m[0] for m, _ in queries} == {"A", "B"}  # both generations were read
    # Every query spanned a switch: the symlink already showed the other generation.
    assert [m[0] for m, _ in queries] == [{"A": "B", "B": "A"}[m[0]] for m in through_symlink]


def test_a_leased_reader_keeps_its_generation_through_publishes_and_a_grace_of_zero(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_GENERATION_GRACE_S", "0")
    contents = {marker: write_content(layout, marker) for marker in CONTENT}
    publish(layout, "A", contents["A"])
    pinned_names = []
    for _ in range(5):
        with generations.pin_generation(layout, CONFIG) as pin:
            paths = pin.paths()

            def two_publishes() -> None:  # the pinned one is then neither current nor previous
                for marker in ("B", "A"):
                    publish(layout, marker, contents[marker])
                    cleanup.cleanup(
                        layout,
                        CONFIG,
                        keep_commit=None,
                        wanted_sha256s=(),
                        grace_s=generation_grace_s(),
                    )

            markers = markers_of(paths, between=two_publishes)
            assert markers == ["A"] * len(paths) and len(paths) == 3
            assert pin.path not in {
                generations.current_generation(layout, CONFIG),
                generations.previous_generation(layout, CONFIG),
            }
            pinned_names.append(pin.name)
    report = cleanup.cleanup(
        layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=generation_grace_s()
    )
    assert [p.name for p in report.generations] == pinned_names[-1:]  # only its lease kept it
    assert not set(pinned_names) & set(generations_on_disk(layout))  # each went once released


def test_mirror_files_are_the_generations_own_paths_in_global_order(layout: Layout) -> None:
    generation = publish(layout, "A", write_content(layout, "A"))
    paths = catalog.mirror_files(home=layout.home)  # the only mirrored config
    assert paths == [generation / name for name in NAMES]
    assert not any(layout.mirror_dir(CONFIG) in p.parents for p in paths)
    publish(layout, "B", write_content(layout, "B"))
    assert markers_of(paths) == ["A"] * 3  # the old paths still read the old generation
    assert [p.name for p in catalog.mirror_files(CONFIG, layout.home)] == list(NAMES[:2])


def test_read_duckdb_without_a_key_reads_the_pinned_mirror(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(layout, "A", write_content(layout, "A"))
    monkeypatch.setenv("TOL_HOME", str(layout.home))
    relation = catalog.read_duckdb(config=CONFIG)
    publish(layout, "B", write_content(layout, "B"))  # after the relation was made, before it runs
    assert relation.aggregate("marker, count(*)").fetchall() == [("A", 600)]


# --- grace and leases ------------------------------------------------------------------------------


def three_generations(layout: Layout) -> list[Path]:
    return [publish(layout, marker, write_content(layout, marker)) for marker in ("A", "B", "A")]


def generations_on_disk(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.generations_dir(CONFIG).iterdir())


def test_a_superseded_generation_stays_for_the_grace_period(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = three_generations(layout)
    superseded_at = read_record(layout, CONFIG, second.name)
    assert superseded_at is not None
    later = datetime.fromtimestamp(superseded_at.published_at, UTC)

    monkeypatch.setenv("TOL_GENERATION_GRACE_S", "100")
    report = cleanup.cleanup(
        layout,
        CONFIG,
        keep_commit=None,
        wanted_sha256s=(),
        grace_s=generation_grace_s(),
        now=later + timedelta(seconds=99),
    )
    assert report.generations == ()
    assert markers_of([first / n for n in NAMES]) == ["A"] * 3

    report = cleanup.cleanup(
        layout,
        CONFIG,
        keep_commit=None,
        wanted_sha256s=(),
        grace_s=generation_grace_s(),
        now=later + timedelta(seconds=101),
    )
    assert report.generations == (first,)
    assert generations_on_disk(layout) == sorted([second.name, third.name])  # current, previous
    assert read_record(layout, CONFIG, first.name) is None  # its record went with it


def test_a_grace_of_zero_removes_at_once_and_the_default_keeps_an_hour(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, _ = three_generations(layout)
    record = read_record(layout, CONFIG, second.name)
    assert record is not None
    hour_later = datetime.fromtimestamp(record.published_at, UTC) + timedelta(seconds=3599)
    kept = cleanup.cleanup(
        layout,
        CONFIG,
        keep_commit=None,
        wanted_sha256s=(),
        grace_s=generation_grace_s(),
        now=hour_later,
    )
    assert kept.generations == ()
    monkeypatch.setenv("TOL_GENERATION_GRACE_S", "0")
    assert cleanup.cleanup(
        layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=generation_grace_s()
    ).generations == (first,)


def test_a_leased_generation_stays_past_its_grace_until_the_lease_ends(layout: Layout) -> None:
    first = publish(layout, "A", write_content(layout, "A"))
    with generations.pin_generation(layout, CONFIG) as pin:
        assert pin.path == first and pin.leased
        publish(layout, "B", write_content(layout, "B"))
        publish(layout, "A", write_content(layout, "A"))
        report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
        assert report.generations == ()
        assert markers_of(pin.paths()) == ["A"] * 3
    assert not pin.leased
    report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
    assert report.generations == (first,)


def test_a_later_step_pins_the_generation_its_run_started_with_past_publishes(
    layout: Layout,
) -> None:
    first = publish(layout, "A", write_content(layout, "A"))
    started = generations.pin_generation(layout, CONFIG, lease=False).name
    publish(layout, "B", write_content(layout, "B"))
    publish(layout, "A", write_content(layout, "A"))  # the previous one is kept: two after

    with generations.pin_named(layout, CONFIG, started) as pin:
        assert pin.path == first and pin.leased
        report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
        assert report.generations == ()
        assert markers_of(pin.paths()) == ["A"] * 3
    report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
    assert report.generations == (first,)
    with pytest.raises(StoreError, match=f"generation {started}, which this run started"):
        generations.pin_named(layout, CONFIG, started)
    assert not layout.lease_path(CONFIG, started).exists(), "no lease file for a removed one"


LEASE_HOLDER = """
import sys, time
from tol_dagster.store.layout import Layout
from tol_dagster.store.generations import pin_generation
pin = pin_generation(Layout(sys.argv[1]), sys.argv[2])
print(pin.name, flush=True)
time.sleep(600)
"""


def test_a_lease_lives_exactly_as_long_as_the_process_holding_it(layout: Layout) -> None:
    first = publish(layout, "A", write_content(layout, "A"))
    holder = subprocess.Popen(
        [sys.executable, "-c", LEASE_HOLDER, str(layout.home), CONFIG],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == first.name
        publish(layout, "B", write_content(layout, "B"))
        publish(layout, "A", write_content(layout, "A"))
        report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
        assert report.generations == ()  # another process reads it
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
        holder.wait(30)
    report = cleanup.cleanup(layout, CONFIG, keep_commit=None, wanted_sha256s=(), grace_s=0)
    assert report.generations == (first,)


def test_pinning_retries_when_the_generation_it_resolved_was_removed(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, third = three_generations(layout)
    resolved = iter([first, third])
    monkeypatch.setattr(generations, "current_generation", lambda *_: next(resolved))
    shutil.rmtree(first)  # as a cleanup between the readlink and the lease would
    with generations.pin_generation(layout, CONFIG) as pin:
        assert pin.path == third


# --- a derived build that a publish interrupts -----------------------------------------------------


def _rows_counted(part: pa.Table, build: str) -> int:
    """Rows of the file a part was computed from: summary lineage counts add up to them; the
    index's kingdom entries count every row with a kingdom (all rows of the sample)."""
    if build == "summaries":  # the part's species rows: one per full lineage
        species = part.filter(pa.compute.equal(part["part"], "species"))
        return sum(species.column("images").to_pylist())
    kingdom = part.filter(pa.compute.equal(part["rank"], "kingdom"))
    return sum(kingdom.column("rows").to_pylist())


@pytest.mark.parametrize(
    ("build", "module", "hooked", "part_name"),
    [
        ("summaries", summaries, "_counts", summaries.SUMMARY_PART),
        ("taxon_index", taxon_index, "_index_files", taxon_index.INDEX_PART),
    ],
)
def test_a_publish_during_a_derived_build_caches_results_of_the_bytes_read(
    synced_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: str,
    module: object,
    hooked: str,
    part_name: str,
) -> None:
    home = tmp_path / "home"
    shutil.copytree(synced_home, home, symlinks=True)
    layout = Layout(home)
    old = generations.pin_generation(layout, CONFIG, lease=False)
    old_files = old.mirror_files()
    real = getattr(module, hooked)
    new_generation: list[Path] = []

    def publish_mid_build(*args: object) -> object:
        """The build has resolved its files; upstream's change to file 0 is published now,
        manifest included, as a concurrent resync would."""
        if not new_generation:
            new_generation.append(publish_file_0_changed(layout, tmp_path / "upstream"))
        return real(*args)

    monkeypatch.setattr(module, hooked, publish_mid_build)
    wanted = asset_key(CONFIG, "taxon_index" if build == "taxon_index" else "summary")
    [chosen] = [
        a
        for a in build_published_assets(CONFIG)
        if any(k.path[: len(wanted.path)] == wanted.path for k in a.keys)
    ]
    result = dg.materialize([chosen], resources=resources_of(home))

    assert result.success and new_generation
    changed = old_files[0]
    new_path = new_generation[0] / changed.name
    old_rows = pq.read_metadata(changed.path).num_rows
    assert old_rows != pq.read_metadata(new_path).num_rows
    part = kept_table(derived_path(layout, CONFIG, changed, part_name))
    assert _rows_counted(part, build) == old_rows  # gen N's bytes under gen N's sha256
    built = layout.state_dir(CONFIG) / f"built-{build}.json"
    assert old.name in built.read_text()  # recorded as built from the generation it read


# --- the gate reads unchanged files from one pinned generation -------------------------------------


def test_the_gate_refuses_unchanged_files_the_pinned_generation_no_longer_holds(
    synced_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(synced_home, home, symlinks=True)
    layout = Layout(home)
    manifest = load_manifest(layout, CONFIG)
    assert manifest is not None
    state = StagedState(
        config=CONFIG,
        repo_id=manifest.repo_id,
        commit=manifest.upstream_commit,
        expected_rows=manifest.card_expected_rows,
        added=[],
        changed=[],
        removed=[],
        files=[
            StagedFile(e.name, e.path, e.sha256, e.size, "current", rows=e.rows)
            for e in manifest.entries
        ],
    )
    assert all(r.passed for r in run_gate(layout, state, max_row_loss=0.01))

    old_files = generations.pin_generation(layout, CONFIG, lease=False).mirror_files()
    new_files = resync_one_file(old_files, 0, tmp_path / "upstream")
    generations.publish_generation(
        layout, CONFIG, commit="next", files={f.name: f.path for f in new_files}
    )  # a publish this staged state knows nothing of: its file 0 is not these bytes any more

    with pytest.raises(StoreError, match=f"{new_files[0].name}.*changed since this sync staged"):
        run_gate(layout, state, max_row_loss=0.01)


def publish_file_0_changed(layout: Layout, upstream: Path) -> Path:
    """Publish a generation whose file 0 upstream rewrote (manifest included, as a resync does)."""
    old_files = generations.pin_generation(layout, CONFIG, lease=False).mirror_files()
    new_files = resync_one_file(old_files, 0, upstream)
    generation = generations.publish_generation(
        layout,
        CONFIG,
        commit="next",
        files={f.name: f.path for f in new_files},
        sha256s={f.name: f.sha256 for f in new_files},
    )
    manifest = load_manifest(layout, CONFIG)
    assert manifest is not None
    entries = tuple(
        replace(e, sha256=new_files[0].sha256) if e.name == new_files[0].name else e
        for e in manifest.entries
    )
    save_manifest(layout, replace(manifest, generation=generation.name, entries=entries))
    return generation


def test_a_slice_of_a_generation_newer_than_the_index_is_found_by_scanning_that_generation(
    synced_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(synced_home, home, symlinks=True)
    layout = Layout(home)
    resources = resources_of(home)
    assets = build_published_assets(CONFIG)
    [index] = [a for a in assets if asset_key(CONFIG, "taxon_index") in a.keys]
    [slices] = [a for a in assets if asset_key(CONFIG, "slices") in a.keys]
    assert dg.materialize([index], resources=resources).success  # built from generation N
    generation = publish_file_0_changed(layout, tmp_path / "upstream")
    changed = generation / sorted(p.name for p in generation.iterdir())[0]
    [(family, _)] = duckdb.execute(
        "SELECT family, count(*) FROM read_parquet(?) WHERE family IS NOT NULL "
        "GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
        [str(changed)],
    ).fetchall()
    key = f"family={family}"

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(slices_partitions_name(CONFIG), [key])
        result = dg.materialize([slices], partition_key=key, instance=instance, resources=resources)
        assert result.success

    expected = duckdb.execute(
        "SELECT uuid FROM read_parquet(?) WHERE family = ?",
        [[str(p) for p in sorted(generation.glob("*.parquet"))], family],
    ).fetchall()
    written = pq.read_table(layout.slices_dir(CONFIG) / parse_slice_key(key).file_name)
    assert written.column("uuid").to_pylist() == [u for (u,) in expected]

"""The derived tables' audit, `bytes_as_published`: each summary table, the taxon index and the
centroids are recorded (sha256, size, which file) as they are published; a table whose bytes
changed on disk since (bit rot, an edit, a deletion) is named with what writes it anew, a
publish in flight and a table older than the records are not drift, and the build the check
names repairs it. Through Dagster: the audit job and `tol-dagster audit` run the check, and
`tol-dagster slice` rebuilds what the last audit found drifted before its own work."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    flip_a_byte,
    job_checks,
    synced,
    synced_home,
    user,
)

from tol_dagster import progress
from tol_dagster.defs.mirror.jobs import AUDIT_JOB
from tol_dagster.defs.published.tables_audit import drifted_tables
from tol_dagster.derived import centroids, table_audit, table_records
from tol_dagster.derived.centroids import build_centroids
from tol_dagster.derived.summaries import build_summaries
from tol_dagster.derived.table_audit import (
    DERIVED_TABLES,
    IN_FLIGHT_S,
    TABLES_AUDIT_CHECK,
    audit_tables,
    table_path,
)
from tol_dagster.derived.table_records import load_record, record_path, record_table
from tol_dagster.derived.taxon_index import build_taxon_index
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found


def dim_of(files: list[MirrorFile]) -> int:
    return int(pq.read_schema(files[0].path).field("emb").type.list_size)


def build_all(files: list[MirrorFile], layout: Layout) -> None:
    build_summaries(files, layout, CONFIG)
    build_taxon_index(files, layout, CONFIG)
    build_centroids(files, layout, CONFIG, dim_of(files))


@pytest.fixture(scope="module")
def built_once(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = Layout(tmp_path_factory.mktemp("derived") / "home")
    build_all(sample_mirror(small_sample), layout)
    return layout


@pytest.fixture
def built(built_once: Layout, tmp_path: Path) -> Layout:
    """A private copy of a home whose derived tables were built (and recorded)."""
    home = tmp_path / "home"
    shutil.copytree(built_once.home, home)
    layout = Layout(home)
    for table in DERIVED_TABLES:  # records name the files they were made from
        record = json.loads(record_path(layout, CONFIG, table).read_text())
        path = table_path(layout, CONFIG, table)
        assert record["path"] == str(table_path(built_once, CONFIG, table))
        stat = path.stat()
        record |= {"path": str(path), "version": [stat.st_dev, stat.st_ino, stat.st_size]}
        record["version"].append(stat.st_mtime_ns)
        record_path(layout, CONFIG, table).write_text(json.dumps(record))
    return layout


def aged(path: Path) -> None:
    """A change made before the audit's window for publishes in flight."""
    stale = time.time() - IN_FLIGHT_S - 60
    os.utime(path, (stale, stale))


def drifted(layout: Layout) -> dict[str, str]:
    return {t: r.message for t, r in audit_tables(layout, CONFIG).items() if not r.passed}


def test_each_table_is_recorded_as_published_and_audits_as_such(built_once: Layout) -> None:
    results = audit_tables(built_once, CONFIG)

    assert list(results) == list(DERIVED_TABLES)
    for table, result in results.items():
        path = table_path(built_once, CONFIG, table)
        record = load_record(built_once, CONFIG, table)
        assert record is not None and record.holds(path.stat().st_size, sha256_file(path))
        assert result.passed and result.details["recorded"], result.message
        assert result.check == TABLES_AUDIT_CHECK and "holds the bytes published" in result.message


@pytest.mark.parametrize("table", ["summary/lineage", "summary/files", "taxon_index", "centroids"])
def test_a_rotted_table_is_named_with_its_rebuild_which_repairs_it(
    built: Layout, small_sample: Path, table: str
) -> None:
    path = table_path(built, CONFIG, table)
    before = path.read_bytes()
    flip_a_byte(path)

    assert list(drifted(built)) == [table]
    message = drifted(built)[table]
    assert str(path) in message and f"materialize tol/{CONFIG}/{table}" in message

    build_all(sample_mirror(small_sample), built)  # incremental: copied segments are checked
    assert drifted(built) == {}
    assert path.read_bytes() == before


def test_a_missing_table_is_drift_and_one_never_built_is_not(built: Layout, tmp_path: Path) -> None:
    table_path(built, CONFIG, "taxon_index").unlink()
    assert "is missing" in drifted(built)["taxon_index"]

    empty = audit_tables(Layout(tmp_path / "empty"), CONFIG)
    assert all(r.passed and "not built yet" in r.message for r in empty.values())


def test_an_edit_in_place_is_drift_once_older_than_a_publish_in_flight(built: Layout) -> None:
    path = table_path(built, CONFIG, "summary/img_type")
    path.write_bytes(path.read_bytes() + b"\0")

    in_flight = audit_tables(built, CONFIG, ["summary/img_type"])["summary/img_type"]
    assert in_flight.passed and in_flight.details["in_flight"], in_flight.message

    aged(path)
    assert "bytes with sha256" in drifted(built)["summary/img_type"]


def test_a_build_killed_between_its_publish_and_its_record_is_in_flight_then_drift_then_mended(
    built: Layout, small_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after renaming its table in, before recording it: the table holds other bytes
    than its record, which is taken for a publish in flight for a while, then is drift, until
    a build writes and records it anew."""
    files = sample_mirror(small_sample)
    path = table_path(built, CONFIG, "centroids")

    def killed(*args: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(centroids, "record_table", killed)
    with pytest.raises(SystemExit):  # fewer files: other centroids than those recorded
        build_centroids(files[:-1], built, CONFIG, dim_of(files))
    monkeypatch.undo()

    in_flight = audit_tables(built, CONFIG, ["centroids"])["centroids"]
    assert in_flight.passed and in_flight.details["in_flight"], in_flight.message
    aged(path)
    assert "where it was published" in drifted(built)["centroids"]

    build_all(files, built)
    assert drifted(built) == {}


def test_a_table_published_before_records_were_kept_passes_and_its_next_build_records_it(
    built: Layout, small_sample: Path
) -> None:
    record_path(built, CONFIG, "centroids").unlink()
    result = audit_tables(built, CONFIG, ["centroids"])["centroids"]
    assert result.passed and not result.details["recorded"], result.message

    build_all(sample_mirror(small_sample), built)
    assert audit_tables(built, CONFIG, ["centroids"])["centroids"].details["recorded"]


def test_a_damaged_record_fails_the_check_naming_it(built: Layout) -> None:
    record = record_path(built, CONFIG, "taxon_index")
    record.write_text("{not json")

    assert str(record) in drifted(built)["taxon_index"]


def test_a_table_that_does_not_read_is_drift_not_an_error_of_the_check(built: Layout) -> None:
    path = table_path(built, CONFIG, "summary/publisher")
    path.unlink()
    path.mkdir()

    assert "does not read" in drifted(built)["summary/publisher"]


def replaced_before_the_record(monkeypatch: pytest.MonkeyPatch, path: Path, data: bytes) -> None:
    """Another publish renames `data` in at `path` just before a record is taken (its lock)."""
    locking = table_records.file_lock

    @contextlib.contextmanager
    def replaced_first(lock: Path) -> Iterator[None]:
        temp = path.with_name("replacement")
        temp.write_bytes(data)
        os.replace(temp, path)
        with locking(lock):
            yield

    monkeypatch.setattr(table_records, "file_lock", replaced_first)


def test_a_record_is_not_written_for_a_table_another_publish_replaced_meanwhile(
    built: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two publishes of one table: the one whose table was replaced while it hashed leaves
    the record to the later one, which holds the lock next."""
    path = table_path(built, CONFIG, "summary/lineage")
    kept = record_path(built, CONFIG, "summary/lineage").read_bytes()
    replaced_before_the_record(monkeypatch, path, path.read_bytes())
    record_table(built, CONFIG, "summary/lineage", path)

    assert record_path(built, CONFIG, "summary/lineage").read_bytes() == kept


def test_the_centroids_hashed_as_written_are_not_recorded_when_replaced_before_the_record(
    built: Layout, small_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The centroid table's sha256 is taken as it is written: a publish renamed in after it
    (another build's) holds other bytes, and the record stays that other build's."""
    files = sample_mirror(small_sample)
    path = table_path(built, CONFIG, "centroids")
    kept = record_path(built, CONFIG, "centroids").read_bytes()
    replaced_before_the_record(monkeypatch, path, b"another build's bytes")
    build_centroids(files[:-1], built, CONFIG, dim_of(files))  # other centroids, not recorded

    assert record_path(built, CONFIG, "centroids").read_bytes() == kept
    monkeypatch.undo()
    build_centroids(files[:-1], built, CONFIG, dim_of(files))
    record = load_record(built, CONFIG, "centroids")
    assert record is not None and record.holds(path.stat().st_size, sha256_file(path))


def test_a_table_republished_between_its_hash_and_its_records_read_is_checked_again(
    built: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old bytes hashed, then a build renames the table anew in and records it: the old
    bytes do not match the new record, and the file is no longer the one hashed."""
    table = "summary/basis_of_record"
    reads = []

    def publish_then_read(layout: Layout, config: str, name: str) -> object:
        if not reads:
            path = table_path(layout, config, name)
            temp = path.with_name("newer")
            temp.write_bytes(b"newer bytes")
            os.replace(temp, path)
            record_table(layout, config, name, path)
        reads.append(name)
        return load_record(layout, config, name)

    aged(table_path(built, CONFIG, table))  # nothing recent: only a read again tells
    monkeypatch.setattr(table_audit, "load_record", publish_then_read)
    result = audit_tables(built, CONFIG, [table])[table]

    assert result.passed and not result.details["in_flight"], result.message
    assert reads == [table, table]


def test_the_audit_reports_progress_every_table_and_every_byte_hashed(built_once: Layout) -> None:
    events: list[progress.Event] = []
    with progress.listening(events.append):
        audit_tables(built_once, CONFIG)

    start, advances = events[0], events[1:]
    assert (start.kind, start.task, start.text) == ("start", "derived tables", CONFIG)
    assert start.files == sum(e.files for e in advances) == len(DERIVED_TABLES)
    sizes = sum(table_path(built_once, CONFIG, t).stat().st_size for t in DERIVED_TABLES)
    assert start.bytes == sum(e.bytes for e in advances) == sizes


# --- through Dagster and the command line ------------------------------------------------------


def test_the_weekly_audit_and_the_audit_command_name_a_rotted_table_the_next_slice_rebuilds_it(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0  # builds the derived tables first
    path = table_path(synced.layout, CONFIG, "taxon_index")
    before = path.read_bytes()
    assert job_checks(AUDIT_JOB)[TABLES_AUDIT_CHECK].passed
    flip_a_byte(path)

    audited = synced.tol("audit", "--json")

    assert audited.code == 4, audited.text
    verdicts = json.loads(audited.out)["checks"]
    failed = [v for v in verdicts if not v["passed"]]
    assert [(v["asset"], v["check"]) for v in failed] == [
        (f"tol/{CONFIG}/taxon_index", TABLES_AUDIT_CHECK)
    ]
    assert sum(v["check"] == TABLES_AUDIT_CHECK for v in verdicts) == len(DERIVED_TABLES)
    assert path.read_bytes() != before  # the audit writes nothing

    with synced.instance() as instance:
        assert drifted_tables(instance, CONFIG) == {"taxon_index": ANY}
    rebuilt = synced.tol("slice", "genus=Panthera")
    assert rebuilt.code == 0, rebuilt.text
    assert path.read_bytes() == before
    with synced.instance() as instance:  # the build's own check answered the drift
        assert drifted_tables(instance, CONFIG) == {}
    assert synced.tol("audit").code == 0

"""The published slices' audit, `slices_match_catalog`: a slice whose bytes changed on disk after
it was published (bit rot, an edit, a deletion) is named with the command that builds it again,
by the weekly audit job (every slice re-hashed) and after each catalog write in Dagster (every
slice looked for and sized); a publish the catalog has not followed yet is not drift, and the
command line's own catalog refresh never fails for another slice's drift. `tol-dagster audit`
runs both audits on demand (the slice sensor's repair is tested in `test_published.py`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
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

from tol_dagster import catalog, progress
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.mirror.jobs import AUDIT_JOB
from tol_dagster.defs.published.jobs import CATALOG_JOB
from tol_dagster.devtools.localhub.faults import Fault
from tol_dagster.hub.retry import QUICK_RETRY
from tol_dagster.resync import audit as mirror_audit
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.slices import audit, catalog_file, records
from tol_dagster.slices.audit import IN_FLIGHT_S, SLICES_AUDIT_CHECK, audit_slices
from tol_dagster.slices.catalog_file import read_catalog, upsert_rows
from tol_dagster.store import hashing
from tol_dagster.store.hashing import sha256_file

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

FELIDAE, PANTHERA = "family=Felidae", "genus=Panthera"


@pytest.fixture
def sliced(synced: User) -> User:
    for key in (FELIDAE, PANTHERA):
        built = synced.tol("slice", key)
        assert built.code == 0, built.text
    return synced


def drifted(details: dict[str, object]) -> object:
    return details["drifted_slices"]


def edited_long_ago(path: Path) -> None:
    """An edit in place made before the audit's window for publishes in flight."""
    stale = time.time() - IN_FLIGHT_S - 60
    os.utime(path, (stale, stale))


def test_the_weekly_audit_names_a_rotted_slice_with_its_rebuild_then_passes_once_rebuilt(
    sliced: User,
) -> None:
    paths = {key: catalog.slice_path(key) for key in (FELIDAE, PANTHERA)}
    checks = job_checks(AUDIT_JOB)
    assert checks[SLICES_AUDIT_CHECK].passed, checks[SLICES_AUDIT_CHECK].description
    hashed = checks[SLICES_AUDIT_CHECK].metadata["bytes_hashed"].value
    assert hashed == sum(path.stat().st_size for path in paths.values())

    flip_a_byte(paths[FELIDAE])
    checks = job_checks(AUDIT_JOB)

    verdict = checks[SLICES_AUDIT_CHECK]
    assert not verdict.passed
    assert verdict.metadata["drifted_slices"].value == [FELIDAE]
    assert f"rebuild it with `tol-dagster slice {FELIDAE} --config {CONFIG}`" in (
        verdict.description or ""
    )
    assert checks[AUDIT_CHECK].passed  # the mirror itself is intact
    rebuilt = sliced.tol("slice", FELIDAE)
    assert rebuilt.code == 0, rebuilt.text
    assert job_checks(AUDIT_JOB)[SLICES_AUDIT_CHECK].passed


def test_after_a_catalog_write_each_slice_is_looked_for_and_sized_not_hashed(
    sliced: User,
) -> None:
    flip_a_byte(catalog.slice_path(FELIDAE))
    catalog.slice_path(PANTHERA).unlink()

    check = job_checks(CATALOG_JOB, [asset_key(CONFIG, "catalog")])[SLICES_AUDIT_CHECK]

    assert not check.passed
    assert check.metadata["drifted_slices"].value == [PANTHERA]
    assert "is missing" in (check.description or "")
    assert check.metadata["bytes_hashed"].value == 0


def test_the_command_lines_catalog_refresh_never_fails_for_another_slices_drift(
    sliced: User,
) -> None:
    path = catalog.slice_path(PANTHERA)
    path.write_bytes(path.read_bytes()[:100])
    edited_long_ago(path)

    built = sliced.tol("slice", FELIDAE)

    assert built.code == 0, built.text
    assert not audit_slices(sliced.layout, CONFIG, rehash=False).passed


def test_a_publish_the_catalog_has_not_followed_yet_is_not_drift(sliced: User) -> None:
    layout = sliced.layout
    path = catalog.slice_path(FELIDAE)
    newer = catalog.slice_path(PANTHERA).read_bytes()  # as a rebuild writes other bytes
    assert len(newer) != path.stat().st_size
    path.write_bytes(newer)
    record = records.slice_record_of(layout, CONFIG, FELIDAE)
    assert record is not None
    in_flight = audit_slices(layout, CONFIG, rehash=True)  # renamed in, its record not yet
    assert in_flight.passed and in_flight.details["in_flight"] == [FELIDAE], in_flight.message

    edited_long_ago(path)
    edited = audit_slices(layout, CONFIG, rehash=True)
    assert not edited.passed and drifted(edited.details) == [FELIDAE], edited.message

    record.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    records.record_path(layout, CONFIG, FELIDAE).write_text(json.dumps(record))
    published = audit_slices(layout, CONFIG, rehash=True)
    assert published.passed and published.details["in_flight"] == [], published.message
    flip_a_byte(path)  # rot in the newer bytes: hashed against the record's sha256 too
    rotted = audit_slices(layout, CONFIG, rehash=True)
    assert not rotted.passed and drifted(rotted.details) == [FELIDAE], rotted.message


def test_a_slice_a_publish_replaces_while_it_is_hashed_is_read_again(
    sliced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = sliced.layout
    path = catalog.slice_path(FELIDAE)
    newer = catalog.slice_path(PANTHERA).read_bytes()
    record = records.slice_record_of(layout, CONFIG, FELIDAE)
    assert record is not None
    hashed: list[Path] = []

    def hash_then_publish(hashing: Path, on_bytes: Callable[[int], None] | None = None) -> str:
        """The old bytes hashed, then a publish renames the new ones in and writes its record."""
        found = sha256_file(hashing, on_bytes)
        hashed.append(hashing)
        if hashing == path and hashed.count(path) == 1:
            temp = path.with_name(path.name + ".new")
            temp.write_bytes(newer)
            os.replace(temp, path)
            record.update(sha256=sha256_file(path), bytes=len(newer))
            records.record_path(layout, CONFIG, FELIDAE).write_text(json.dumps(record))
        return found

    monkeypatch.setattr(hashing, "sha256_file", hash_then_publish)
    result = audit_slices(layout, CONFIG, rehash=True)

    assert result.passed and result.details["in_flight"] == [], result.message
    assert hashed.count(path) == 2


def test_a_slice_republished_between_its_read_and_its_records_read_is_checked_again(
    sliced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Republished once before the audit (the catalog not following yet), then again between
    the audit's hash and its read of the record: the bytes hashed match neither the catalog
    nor the newer record, and the file is no longer the one hashed."""
    layout = sliced.layout
    path = catalog.slice_path(FELIDAE)
    record = records.slice_record_of(layout, CONFIG, FELIDAE)
    assert record is not None

    def publish(data: bytes) -> None:
        temp = path.with_name(path.name + ".new")
        temp.write_bytes(data)
        os.replace(temp, path)
        record.update(sha256=sha256_file(path), bytes=len(data))
        records.record_path(layout, CONFIG, FELIDAE).write_text(json.dumps(record))

    publish(catalog.slice_path(PANTHERA).read_bytes())
    edited_long_ago(path)
    reads: list[str] = []
    reading = records.slice_record_of

    def republish_then_read(layout: Any, config: str, name: str) -> dict[str, Any] | None:
        if not reads:
            publish(path.read_bytes() + b"newer")
        reads.append(name)
        return reading(layout, config, name)

    monkeypatch.setattr(audit, "slice_record_of", republish_then_read)
    result = audit_slices(layout, CONFIG, rehash=True)

    assert result.passed and result.details["in_flight"] == [], result.message
    assert reads == [FELIDAE, FELIDAE]


def test_a_slice_removed_while_the_audit_runs_is_not_drift(
    sliced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = sliced.layout
    real, removed = audit.check_slice, catalog.slice_path(PANTHERA)

    def removing_meanwhile(*args: Any, **kwargs: Any) -> audit.Found:
        if removed.exists():  # as `slices remove` does: the record, the catalog's row, the file
            records.record_path(layout, CONFIG, PANTHERA).unlink()
            catalog_file.remove_entry(layout, CONFIG, PANTHERA)
            removed.unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(audit, "check_slice", removing_meanwhile)
    result = audit_slices(layout, CONFIG, rehash=True)

    assert result.passed and result.details["removed_since_catalog"] == [PANTHERA], result


def test_a_slice_dropped_with_its_record_is_not_drift_until_the_catalog_follows(
    sliced: User,
) -> None:
    """A rank pass drops a value (a raised `min_rows`): its file, then its record; the catalog's
    row goes at the catalog's next write."""
    layout = sliced.layout
    catalog.slice_path(PANTHERA).unlink()
    records.record_path(layout, CONFIG, PANTHERA).unlink()

    result = audit_slices(layout, CONFIG, rehash=True)

    assert result.passed and result.details["removed_since_catalog"] == [PANTHERA], result
    assert "1 removed since the catalog was written" in result.message


def test_a_damaged_catalog_fails_the_audit_naming_it(sliced: User) -> None:
    path = sliced.layout.catalog_path(CONFIG)
    path.write_bytes(b"PAR1 not a catalog")

    result = audit_slices(sliced.layout, CONFIG, rehash=True)

    assert not result.passed
    assert f"the slice catalog {path} is damaged" in result.message


def test_no_slices_published_passes_with_nothing_checked(synced: User) -> None:
    result = audit_slices(synced.layout, CONFIG, rehash=True)

    assert result.passed and result.details["slices_checked"] == 0, result.message


def test_a_check_over_many_drifted_slices_counts_all_and_lists_the_first_by_name(
    sliced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "MAX_LISTED", 1)
    for key in (FELIDAE, PANTHERA):
        catalog.slice_path(key).unlink()

    result = audit_slices(sliced.layout, CONFIG, rehash=False)

    assert not result.passed and result.message.startswith("2 of 2 published slices"), result
    assert result.details["drifted_count"] == 2
    assert drifted(result.details) == [FELIDAE]


def test_a_slice_that_does_not_read_is_drift_not_an_error_of_the_check(sliced: User) -> None:
    path = catalog.slice_path(FELIDAE)
    path.unlink()
    path.mkdir()  # a folder in its place

    result = audit_slices(sliced.layout, CONFIG, rehash=True)

    assert not result.passed and drifted(result.details) == [FELIDAE], result.message
    assert "does not read" in result.message


def test_the_audit_command_exits_0_when_every_byte_is_as_published(sliced: User) -> None:
    audited = sliced.tol("audit")

    assert audited.code == 0, audited.text
    assert f"ok: tol/{CONFIG}/mirror mirror_matches_manifest:" in audited.out
    assert f"ok: tol/{CONFIG}/catalog slices_match_catalog: 2 published slices" in audited.out


def test_the_audit_command_exits_4_naming_a_rotted_slice_and_mirror_file_and_writes_nothing(
    sliced: User,
) -> None:
    layout = sliced.layout
    flip_a_byte(catalog.slice_path(FELIDAE))
    rotten = sorted(layout.mirror_dir(CONFIG).glob("*.parquet"))[0]
    flip_a_byte(rotten)
    published = {p: p.read_bytes() for p in layout.slices_dir(CONFIG).iterdir()}

    audited = sliced.tol("audit", "--json")

    assert audited.code == 4, audited.text
    document = json.loads(audited.out)
    assert document["command"] == "audit" and document["exit_code"] == 4
    verdicts = {v["check"]: v for v in document["checks"]}
    assert not verdicts[SLICES_AUDIT_CHECK]["passed"]
    assert (
        f"tol-dagster slice {FELIDAE} --config {CONFIG}" in verdicts[SLICES_AUDIT_CHECK]["message"]
    )
    assert not verdicts[AUDIT_CHECK]["passed"] and rotten.name in verdicts[AUDIT_CHECK]["message"]
    assert any(SLICES_AUDIT_CHECK in line for line in document["errors"])
    assert {p: p.read_bytes() for p in layout.slices_dir(CONFIG).iterdir()} == published


def test_the_audit_command_against_a_failing_hub_notes_upstream_after_one_quick_retry(
    sliced: User,
) -> None:
    """Upstream is a note of the audit (the upstream sensor follows it): a Hub that answers
    503 is asked twice, not with the patient policy of downloads (six tries, 31 s)."""
    sliced.reset_counts()
    sliced.hub.add_fault(Fault("status", status=503))

    audited = sliced.tol("audit")

    assert audited.code == 0, audited.text
    assert "upstream not compared" in audited.out
    assert sum(sliced.requests().values()) == QUICK_RETRY.attempts


def test_the_audit_command_refuses_a_config_not_configured(sliced: User) -> None:
    audited = sliced.tol("audit", "--config", "nope")

    assert audited.code == 2, audited.text
    assert "--config 'nope' is not configured" in audited.err


def test_the_audit_command_without_a_mirror_exits_2_saying_to_sync(user: User) -> None:
    audited = user.tol("audit")

    assert audited.code == 2, audited.text
    assert "no mirror is published" in audited.err and "tol-dagster sync" in audited.err


def test_the_audits_report_progress_every_file_and_every_byte_hashed(sliced: User) -> None:
    events: list[progress.Event] = []
    with progress.listening(events.append):
        audit_slices(sliced.layout, CONFIG, rehash=True)
        mirror_audit.audit(sliced.layout, CONFIG)

    starts = [i for i, e in enumerate(events) if e.kind == "start"]
    assert [(events[i].task, events[i].text) for i in starts] == [
        ("slices", CONFIG),
        ("mirror", CONFIG),
    ]
    for begin, end in zip(starts, [*starts[1:], len(events)], strict=True):
        start, advances = events[begin], events[begin + 1 : end]
        assert start.files == sum(e.files for e in advances) > 0, start
        assert start.bytes == sum(e.bytes for e in advances) > 0, start


def test_a_catalog_row_whose_name_no_longer_parses_is_drift_named_not_an_error(
    sliced: User,
) -> None:
    """A row kept from before a key rule was tightened (control characters): no record can be
    kept under such a name, so its missing file is drift, and the check still runs."""
    layout = sliced.layout
    odd = "family=Fel\x07idae"
    row = read_catalog(layout, CONFIG).filter(pc.equal(pc.field("name"), FELIDAE))
    renamed = row.set_column(row.schema.get_field_index("name"), "name", pa.array([odd]))
    upsert_rows(layout, CONFIG, renamed.set_column(4, "path", pa.array(["/nowhere.parquet"])))

    result = audit_slices(layout, CONFIG, rehash=True)

    assert not result.passed and drifted(result.details) == [odd], result.message
    assert result.details["slices_checked"] == 3
    assert "remove it with `tol-dagster slices remove" in result.message

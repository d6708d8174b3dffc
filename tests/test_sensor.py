"""`upstream_change_sensor` over several ticks against the local Hub: what it requests, what it
costs the Hub, and where its cursor goes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from resync_testing import (
    CONFIG,
    copy_home,
    file_names,
    set_card_rows,
    synced_home,
    tick,
    upstream_rows,
    valid_edit,
)

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.attempts import attempt_key
from tol_dagster.defs.mirror import upstream_sensor
from tol_dagster.defs.mirror.keys import resync_keys
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.devtools.localhub import Fault, LocalHub
from tol_dagster.resync.audit import AUDIT_CHECK
from tol_dagster.settings import Settings

__all__ = ["synced_home"]  # a fixture, imported to be found


@dataclass
class Ticks:
    """The sensor of one code location, ticked by hand against one Hub and one instance."""

    hub: LocalHub
    root: Path
    settings: Settings
    instance: dg.DagsterInstance

    def tick(self, cursor: str | None) -> dg.SensorExecutionData:
        return tick(self.instance, "upstream_change_sensor", self.settings, cursor)

    def requests(self) -> dict[str, int]:
        return {kind: value["count"] for kind, value in self.hub.stats().items()}


def cursor_of(commit: str) -> str:
    return json.dumps({"commit": commit})


def record_run(
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    status: dg.DagsterRunStatus,
    **tags: str,
) -> str:
    """The run the daemon would have launched for `request`, recorded with `status`."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="resync_job",
            run_id=run_id,
            status=status,
            tags={**request.tags, "dagster/run_key": request.run_key or "", **tags},
        )
    )
    return run_id


def pending_commit(result: dg.SensorExecutionData) -> str | None:
    return json.loads(result.cursor or "{}").get("pending", {}).get("commit")


@pytest.fixture
def ticks(local_hub: LocalHub, hub_root: Path, tmp_path: Path) -> Iterator[Ticks]:
    """A code location with an empty mirror."""
    settings = Settings.from_env(
        {
            "TOL_HOME": str(tmp_path / "home"),
            "TOL_HUB_ENDPOINT": local_hub.endpoint,
            "TOL_REPO_ID": local_hub.repo_id,
            "TOL_SENSOR_RETRY_DELAY_S": "0",
        }
    )
    with dg.instance_for_test() as instance:
        yield Ticks(local_hub, hub_root, settings, instance)


@pytest.fixture
def synced(ticks: Ticks, synced_home: Path) -> Ticks:
    """A code location whose mirror holds upstream's current commit; the Hub's counters at 0."""
    copy_home(synced_home, ticks.settings.home, ticks.hub)
    ticks.hub.reset()
    return ticks


def test_the_first_tick_on_an_empty_mirror_requests_a_resync_pinned_to_the_head(
    ticks: Ticks,
) -> None:
    head = ticks.hub.head_commit()

    result = ticks.tick(None)

    [request] = result.run_requests or []
    assert head in (request.run_key or "")
    assert list(request.asset_selection or []) == resync_keys(CONFIG)
    checks = {(key.asset_key, key.name) for key in request.asset_check_keys or []}
    assert {asset for asset, _ in checks} == {
        dg.AssetKey(["tol", CONFIG, "staged"]),
        dg.AssetKey(["tol", CONFIG, "mirror"]),
    }, "a resync runs the gate, then the audit of what it published"
    assert (dg.AssetKey(["tol", CONFIG, "mirror"]), AUDIT_CHECK) in checks
    assert request.tags["tol/source"] == "sensor"
    assert request.run_config == resync_run_config(CONFIG, commit=head)
    assert request.tags["tol/resync"] == CONFIG
    assert request.tags["dagster/max_retries"] == "1", "Dagster retries a failed resync once"
    cursor = json.loads(result.cursor or "{}")
    assert cursor["commit"] is None, "the cursor advances only once the resync succeeded"
    assert pending_commit(result) == head


def test_a_tick_without_upstream_change_skips_with_one_hub_request(ticks: Ticks) -> None:
    first = ticks.tick(None)
    [request] = first.run_requests or []
    record_run(ticks.instance, request, dg.DagsterRunStatus.SUCCESS)
    advanced = ticks.tick(first.cursor)
    assert json.loads(advanced.cursor or "{}") == {"commit": ticks.hub.head_commit()}
    ticks.hub.reset()

    second = ticks.tick(advanced.cursor)

    assert not second.run_requests
    assert second.skip_message and "unchanged" in second.skip_message
    assert {kind: n for kind, n in ticks.requests().items() if n} == {"info": 1}


def test_an_upstream_edit_requests_a_resync_of_the_new_commit(synced: Ticks) -> None:
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[1])
    after = synced.hub.head_commit()
    synced.hub.reset()

    result = synced.tick(cursor_of(before))

    [request] = result.run_requests or []
    assert after in (request.run_key or "") and before not in (request.run_key or "")
    assert request.tags["tol/plan"].startswith("0 added, 1 changed, 0 removed")
    assert json.loads(result.cursor or "{}")["commit"] == before
    assert pending_commit(result) == after
    requests = {kind: n for kind, n in synced.requests().items() if n}
    assert requests == {"info": 2, "tree": 1}, "head, then one listing of the config at it"


def test_a_commit_touching_only_another_config_requests_nothing_but_advances_the_cursor(
    synced: Ticks,
) -> None:
    before = synced.hub.head_commit()
    other = synced.root / "other-config"
    other.mkdir()
    (other / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not read by anyone PAR1")
    after = synced.hub.head_commit()
    assert after != before

    result = synced.tick(cursor_of(before))

    assert not result.run_requests
    assert json.loads(result.cursor or "{}") == {"commit": after}


def test_a_card_only_count_change_requests_a_revalidation(synced: Ticks) -> None:
    before = synced.hub.head_commit()
    set_card_rows(synced.root, upstream_rows(synced.root) - 1)

    result = synced.tick(cursor_of(before))

    [request] = result.run_requests or []
    assert "card count changed" in request.tags["tol/plan"]
    assert "no download" in request.tags["tol/plan"]


def test_the_same_change_gets_the_same_run_key_and_a_new_change_a_new_one(
    synced: Ticks,
) -> None:
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[0])
    [first] = synced.tick(cursor_of(before)).run_requests or []
    [again] = synced.tick(cursor_of(before)).run_requests or []
    valid_edit(synced.root, file_names(synced.root)[0])
    [newer] = synced.tick(cursor_of(before)).run_requests or []

    assert first.run_key == again.run_key != newer.run_key


@pytest.mark.parametrize("outage", ["stopped", "503"])
def test_a_hub_outage_skips_the_tick_quickly_and_keeps_the_cursor(
    ticks: Ticks, outage: str
) -> None:
    cursor = ticks.tick(None).cursor
    if outage == "stopped":
        ticks.hub.stop()
    else:
        ticks.hub.add_fault(Fault("status", request_kind="info", status=503))

    started = time.monotonic()
    result = ticks.tick(cursor)
    elapsed = time.monotonic() - started

    assert not result.run_requests
    assert result.skip_message and "Hub unreachable" in result.skip_message
    assert result.cursor in (None, cursor), "the cursor stays where it was"
    assert elapsed < 10, f"a tick against a Hub that is down took {elapsed:.1f} s"


def test_a_rate_limited_hub_skips_the_tick_after_one_short_wait(ticks: Ticks) -> None:
    cursor = ticks.tick(None).cursor
    ticks.hub.add_fault(Fault("rate_limit", request_kind="info", retry_after=86400))

    started = time.monotonic()
    result = ticks.tick(cursor)
    elapsed = time.monotonic() - started

    assert result.skip_message and "HTTP 429" in result.skip_message
    assert result.cursor in (None, cursor)
    assert 5.0 <= elapsed < 15, f"a tick against a rate-limiting Hub took {elapsed:.1f} s"


def test_the_minimum_interval_comes_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"TOL_HOME": str(tmp_path), "TOL_SENSOR_MIN_INTERVAL_S": "17"})

    sensor = build_definitions(settings).resolve_sensor_def("upstream_change_sensor")

    assert sensor.minimum_interval_seconds == 17
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


# --- the cursor follows the requested runs ---------------------------------------------------------


def test_the_cursor_advances_only_when_the_requested_resync_succeeded(synced: Ticks) -> None:
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[1])
    after = synced.hub.head_commit()
    first = synced.tick(cursor_of(before))
    [request] = first.run_requests or []

    never_launched = synced.tick(first.cursor)
    [again] = never_launched.run_requests or []
    assert again.run_key == request.run_key, "a request the daemon never launched is asked again"

    run_id = record_run(synced.instance, request, dg.DagsterRunStatus.STARTED)
    running = synced.tick(first.cursor)
    assert not running.run_requests
    assert running.skip_message and "in progress" in running.skip_message
    assert run_id in running.skip_message
    assert json.loads(running.cursor or "{}")["commit"] == before

    synced.instance.report_run_failed(synced.instance.get_run_by_id(run_id))  # type: ignore[arg-type]
    failed = synced.tick(running.cursor)
    [retry] = failed.run_requests or []
    assert retry.run_key == f"{request.run_key}:attempt-2"
    assert retry.run_config == request.run_config and retry.tags["tol/commit"] == after
    assert json.loads(failed.cursor or "{}")["commit"] == before, "a failure keeps the cursor"

    record_run(synced.instance, retry, dg.DagsterRunStatus.SUCCESS)
    done = synced.tick(failed.cursor)
    assert not done.run_requests
    assert json.loads(done.cursor or "{}") == {"commit": after}
    assert synced.tick(done.cursor).skip_message == f"upstream unchanged at {after[:10]}"


def test_a_failure_the_daemon_will_retry_is_waited_for_not_requested_again(
    synced: Ticks,
) -> None:
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[1])
    first = synced.tick(cursor_of(before))
    [request] = first.run_requests or []
    record_run(
        synced.instance, request, dg.DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"}
    )

    result = synced.tick(first.cursor)

    assert not result.run_requests
    assert result.skip_message and "in progress" in result.skip_message


def test_after_three_failed_attempts_the_sensor_gives_up_until_upstream_changes(
    synced: Ticks,
) -> None:
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[1])
    cursor = synced.tick(cursor_of(before)).cursor
    keys = []
    for _ in range(3):
        result = synced.tick(cursor)
        [request] = result.run_requests or []
        keys.append(request.run_key)
        record_run(synced.instance, request, dg.DagsterRunStatus.FAILURE)
        cursor = result.cursor

    gave_up = synced.tick(cursor)

    assert len(set(keys)) == 3
    assert not gave_up.run_requests
    assert gave_up.skip_message and "failed 3 times" in gave_up.skip_message
    assert json.loads(gave_up.cursor or "{}")["commit"] == before
    valid_edit(synced.root, file_names(synced.root)[1])
    [newer] = synced.tick(gave_up.cursor).run_requests or []
    assert synced.hub.head_commit() in (newer.run_key or ""), "a newer commit is tried afresh"


def test_a_failed_resync_is_requested_again_only_once_its_delay_passed(synced: Ticks) -> None:
    """A cause that lasts (the Hub's file servers down while it answers the head request) does
    not use up the attempts in three ticks: the second waits the delay, the third 4× it."""
    delayed = Ticks(
        **{**vars(synced), "settings": replace(synced.settings, sensor_retry_delay_s=1)}
    )
    before = synced.hub.head_commit()
    valid_edit(synced.root, file_names(synced.root)[1])
    first = delayed.tick(cursor_of(before))
    [request] = first.run_requests or []
    waited = []
    for attempt in (2, 3):
        run_id = record_run(synced.instance, request, dg.DagsterRunStatus.STARTED)
        failed_at = time.monotonic()
        synced.instance.report_run_failed(synced.instance.get_run_by_id(run_id))  # its end_time

        waiting = delayed.tick(first.cursor)

        assert not waiting.run_requests
        assert waiting.skip_message and f"attempt {attempt} in 1 min" in waiting.skip_message
        assert waiting.cursor == first.cursor, "still pending"
        while not (retry := delayed.tick(first.cursor)).run_requests:
            assert time.monotonic() - failed_at < 10, "the attempt was never requested"
            time.sleep(0.2)
        waited.append(time.monotonic() - failed_at)
        [request] = retry.run_requests or []
        assert request.run_key == attempt_key(first.run_requests[0].run_key or "", attempt)

    assert 1 <= waited[0] < 4 <= waited[1]


def test_a_commit_that_changed_no_file_skips_saying_so(synced: Ticks) -> None:
    before = synced.hub.head_commit()
    (synced.root / "NOTES.md").write_text("a file outside every config\n")
    after = synced.hub.head_commit()
    assert after != before

    result = synced.tick(cursor_of(before))

    assert not result.run_requests
    assert result.skip_message == (
        f"upstream at {after[:10]}, nothing to fetch: bioclip-2_float16: in sync: commit "
        f"{after[:10]} changed no file of bioclip-2_float16 (mirror published at "
        f"{before[:10]}, same files)"
    )


def test_an_unchanged_upstream_is_confirmed_once_half_the_freshness_window_passed(
    synced: Ticks, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = synced.hub.head_commit()
    synced.instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey(["tol", CONFIG, "mirror"]))
    )
    assert synced.tick(cursor_of(head)).skip_message == f"upstream unchanged at {head[:10]}"

    days = synced.settings.freshness_days
    later = time.time() + days * 86400 / 2 + 60
    monkeypatch.setattr(upstream_sensor, "time", SimpleNamespace(time=lambda: later))
    result = synced.tick(cursor_of(head))

    [request] = result.run_requests or []
    assert request.tags["tol/plan"] == "confirm upstream unchanged"
    assert head in (request.run_key or "") and "confirm" in (request.run_key or "")
    assert request.run_config == resync_run_config(CONFIG, commit=head)
    again = synced.tick(cursor_of(head))
    assert [r.run_key for r in again.run_requests or []] == [request.run_key], (
        "the same run key within the window: Dagster launches it once"
    )


#: Cursors a person might set in the UI that this sensor never writes.
HAND_SET_CURSORS = [
    "not json",
    "[1, 2]",
    '{"commit": 5}',
    '{"pending": "x"}',
    '{"commit": null, "pending": {"commit": "abc", "configs": {"c": "x"}}}',
]


@pytest.mark.parametrize("cursor", HAND_SET_CURSORS)
def test_a_cursor_set_by_hand_that_the_sensor_never_writes_starts_it_over(
    synced: Ticks, cursor: str
) -> None:
    fresh = synced.tick(None)
    result = synced.tick(cursor)
    assert result.run_requests == fresh.run_requests == []
    assert json.loads(result.cursor or "") == {"commit": synced.hub.head_commit()}

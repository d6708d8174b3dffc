"""The resync end to end, as a user runs it: `tol-dagster sync` and `status` through Dagster,
the real `huggingface_hub` client, the local Hub counting every request it serves.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from resync_testing import (
    CONFIG,
    LAUNCHED_RESYNC,
    HubSleeps,
    User,
    dagster_home,
    edit_upstream,
    file_names,
    hub_sleeps,
    make_user,
    manifest,
    mirror_view,
    replace_upstream,
    set_card_rows,
    sync_process,
    synced,
    synced_home,
    tick,
    upstream_files,
    upstream_rows,
    user,
    valid_edit,
    write_upstream,
)

from tol_dagster.defs.keys import RESYNC_TAG, SOURCE_TAG
from tol_dagster.defs.orphaned_runs import PID_TAG
from tol_dagster.devtools.localhub import Fault, LocalHub
from tol_dagster.resync import facts, gate
from tol_dagster.resync.state import load_staged
from tol_dagster.schema import expected_schema
from tol_dagster.settings import Settings
from tol_dagster.store.quarantine import list_quarantine

__all__ = [
    "dagster_home",
    "hub_sleeps",
    "synced",
    "synced_home",
    "user",
]  # fixtures, imported to be found

TOKEN = "hf_tolTEST_s3cr3t_0123456789abcdef"


# --- the happy paths ----------------------------------------------------------------------------


def test_first_sync_publishes_exactly_upstreams_files_and_records_the_run(user: User) -> None:
    outcome = user.sync()

    assert outcome.code == 0, outcome.text
    view = mirror_view(user.layout)
    assert view.sha256s == upstream_files(user.root)
    assert sorted(os.listdir(user.layout.mirror_dir(CONFIG))) == file_names(user.root)
    assert manifest(user.layout).upstream_commit == user.hub.head_commit()
    assert manifest(user.layout).total_rows == upstream_rows(user.root)
    [run_id] = outcome.run_ids
    with user.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["tol/resync"] == CONFIG
        materialized = instance.get_latest_materialization_event(
            dg.AssetKey(["tol", CONFIG, "mirror"])
        )
        assert materialized is not None and materialized.run_id == run_id


def test_an_in_sync_sync_makes_no_file_request(synced: User) -> None:
    before = mirror_view(synced.layout)

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    made = {kind: n for kind, n in synced.requests().items() if n}
    assert made == {"info": 1, "tree": 1}, "the head and one listing of the config"
    assert mirror_view(synced.layout) == before


def test_an_upstream_edit_fetches_only_that_file_and_links_the_others(synced: User) -> None:
    before = mirror_view(synced.layout)
    edited = file_names(synced.root)[1]
    valid_edit(synced.root, edited)

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.requests()["lfs_get"] == 1
    assert synced.bytes_served() == (synced.folder / edited).stat().st_size
    after = mirror_view(synced.layout)
    assert after.sha256s == upstream_files(synced.root)
    assert after.target != before.target
    for name, (sha256, inode) in before.files.items():
        if name != edited:
            assert after.files[name] == (sha256, inode), f"{name} was copied, not linked"


def test_a_file_deleted_upstream_leaves_the_mirror(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_MAX_ROW_LOSS", "0.5")  # a third of the rows go with the file
    gone = file_names(synced.root)[-1]
    (synced.folder / gone).unlink()
    set_card_rows(synced.root, upstream_rows(synced.root))

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert gone not in os.listdir(synced.layout.mirror_dir(CONFIG))
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    assert synced.requests()["lfs_get"] == 0


def test_a_new_upstream_file_is_added(synced: User) -> None:
    names = file_names(synced.root)
    last = pq.read_table(synced.folder / names[-1])
    new = "train-00003-of-00003.parquet"
    tail = last.slice(last.num_rows - 5)  # the same keys as the end of the last file: still sorted
    fresh = pa.array([f"{i:032x}" for i in range(tail.num_rows)])
    write_upstream(synced.folder / new, tail.set_column(0, "uuid", fresh))
    set_card_rows(synced.root, upstream_rows(synced.root))

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.requests()["lfs_get"] == 1
    assert sorted(os.listdir(synced.layout.mirror_dir(CONFIG))) == [*names, new]
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_a_commit_touching_only_another_config_fetches_nothing(synced: User) -> None:
    before = mirror_view(synced.layout)
    other = synced.root / "other-config"
    other.mkdir()
    (other / "train-00000-of-00001.parquet").write_bytes(
        (synced.folder / file_names(synced.root)[0]).read_bytes()
    )

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    assert mirror_view(synced.layout).files == before.files
    assert manifest(synced.layout).upstream_commit == synced.hub.head_commit()


def test_a_card_only_count_change_revalidates_without_download(user: User, hub_root: Path) -> None:
    set_card_rows(hub_root, None)
    assert user.sync().code == 0
    assert manifest(user.layout).card_expected_rows is None
    before = mirror_view(user.layout)
    set_card_rows(hub_root, upstream_rows(hub_root))
    user.reset_counts()

    outcome = user.sync()

    assert outcome.code == 0, outcome.text
    assert user.file_requests() == dict.fromkeys(user.file_requests(), 0)
    assert manifest(user.layout).card_expected_rows == upstream_rows(hub_root)
    assert mirror_view(user.layout).files == before.files


def test_a_card_count_the_files_do_not_hold_is_refused_and_the_mirror_kept(
    synced: User,
) -> None:
    before = mirror_view(synced.layout)
    set_card_rows(synced.root, upstream_rows(synced.root) + 7)

    outcome = synced.sync()

    assert outcome.code == 1, outcome.text
    assert "rows_match_card" in outcome.err and "card says" in outcome.err
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    assert mirror_view(synced.layout) == before


def test_status_json_reports_in_sync_then_pending(synced: User) -> None:
    in_sync = json.loads(synced.tol("status", "--json").out)
    valid_edit(synced.root, file_names(synced.root)[0])
    pending = json.loads(synced.tol("status", "--json").out)

    assert in_sync["exit_code"] == 0 and in_sync["configs"][CONFIG]["in_sync"] is True
    entry = pending["configs"][CONFIG]
    assert entry["in_sync"] is False
    assert "1 changed" in entry["pending"]
    assert entry["upstream_commit"] == synced.hub.head_commit() != entry["mirror_commit"]


# --- the gate -------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    replace_upstream(path, lambda temp: temp.write_bytes(data[: len(data) // 2]))


def _set_row(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(
        index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
    )


def _nan_emb(table: pa.Table) -> pa.Table:
    emb = table.column("emb").combine_chunks()
    values = emb.values.to_numpy(zero_copy_only=False).copy()
    values[5 * emb.type.list_size] = np.nan
    rebuilt = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float16()), emb.type.list_size)
    return table.set_column(table.schema.get_field_index("emb"), "emb", rebuilt)


def _float32_emb(table: pa.Table) -> pa.Table:
    emb = table.column("emb")
    wider = pc.cast(emb, pa.list_(pa.float32(), emb.type.list_size))
    return table.set_column(table.schema.get_field_index("emb"), "emb", wider)


def _unsorted(table: pa.Table) -> pa.Table:
    """The file's last row moved to the front (its key sorts after the first row's)."""
    return table.take([table.num_rows - 1, *range(table.num_rows - 1)])


class Corruption(NamedTuple):
    """A way upstream can break one file, and what the user must read about it."""

    apply: Callable[[User, str], None]
    check: str
    reason: str
    quarantined: bool = True  # False: each file passes alone, the config as a whole does not


def _edit(edit: Callable[[pa.Table], pa.Table]) -> Callable[[User, str], None]:
    return lambda user, name: edit_upstream(user.folder / name, edit)


def _duplicate_from_first_file(user: User, name: str) -> None:
    first = pq.read_table(user.folder / file_names(user.root)[0], columns=["uuid"])
    edit_upstream(user.folder / name, lambda t: _set_row(t, "uuid", 0, first["uuid"][0].as_py()))


CORRUPTIONS = {
    "truncated": Corruption(
        lambda user, name: _truncate(user.folder / name), "footer_reads", "footer does not read"
    ),
    "extra column": Corruption(
        _edit(lambda t: t.append_column("resolution_status", pa.array(["ok"] * t.num_rows))),
        "schema_matches_contract",
        "extra column 'resolution_status'",
        False,  # stays staged: --accept-schema-change may accept an added column
    ),
    "changed type": Corruption(
        _edit(_float32_emb),
        "schema_matches_contract",
        "column 'emb': element type float, expected halffloat",
    ),
    "dropped rows": Corruption(
        _edit(lambda t: t.slice(10)), "rows_match_card", "(2,000 -> 1,990 rows)", False
    ),
    "unsorted rows": Corruption(
        _edit(_unsorted), "sorted_by_contract_key", "rows 0 and 1 are out of order"
    ),
    "duplicate uuid in a file": Corruption(
        _edit(lambda t: _set_row(t, "uuid", 1, t["uuid"][0].as_py())),
        "uuid_unique",
        "appears more than once",
    ),
    "duplicate uuid across files": Corruption(
        _duplicate_from_first_file, "uuid_unique", "train-00000-of-00003.parquet (row 0)", False
    ),
    "NaN in emb": Corruption(_edit(_nan_emb), "emb_finite", "NaN"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_upstream_file_is_refused_named_and_then_fixed_alone(
    synced: User, small_sample: Path, corruption: str
) -> None:
    case = CORRUPTIONS[corruption]
    before = mirror_view(synced.layout)
    bad = file_names(synced.root)[1]
    case.apply(synced, bad)

    refused = synced.sync()

    assert refused.code == 1, refused.text
    assert mirror_view(synced.layout) == before
    assert synced.requests()["lfs_get"] == 1
    said = [line for line in refused.err.splitlines() if f"check {case.check} failed" in line]
    assert [line for line in said if bad in line and case.reason in line], refused.err
    aside = [q for q in list_quarantine(synced.layout, CONFIG) if q.path.name.startswith(bad)]
    assert bool(aside) is case.quarantined
    assert all(case.check in q.reason for q in aside)

    valid_edit(synced.root, bad, source=small_sample / CONFIG / bad)
    synced.reset_counts()
    fixed = synced.sync()

    assert fixed.code == 0, fixed.text
    assert synced.requests()["lfs_get"] == 1
    assert synced.bytes_served() == (synced.folder / bad).stat().st_size
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def _flip_a_byte_behind_the_hubs_back(hub: LocalHub, path: Path) -> None:
    """The Hub keeps announcing the sha256 it hashed, but serves other bytes (bit rot, a bad
    CDN node): the same size, inode and mtime, one byte flipped in the middle."""
    time.sleep(0.15)  # past the Hub's "racy" window, so it trusts the hash it takes now
    hub.head_commit()
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek(stat.st_size // 2)
        byte = handle.read(1)
        handle.seek(stat.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_bytes_that_differ_from_upstreams_sha256_are_refused_then_fixed_alone(
    synced: User, small_sample: Path
) -> None:
    before = mirror_view(synced.layout)
    bad = file_names(synced.root)[1]
    valid_edit(synced.root, bad)
    announced = upstream_files(synced.root)[bad]
    _flip_a_byte_behind_the_hubs_back(synced.hub, synced.folder / bad)

    refused = synced.sync()

    assert refused.code == 1, refused.text
    assert any(
        "sha256_matches_upstream" in line and bad in line and announced in line
        for line in refused.err.splitlines()
    ), refused.err
    assert mirror_view(synced.layout) == before
    assert synced.requests()["lfs_get"] == 1

    valid_edit(synced.root, bad, source=small_sample / CONFIG / bad, drop=5)
    synced.reset_counts()
    fixed = synced.sync()

    assert fixed.code == 0, fixed.text
    assert synced.requests()["lfs_get"] == 1
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_row_loss_beyond_the_limit_is_refused_unless_accepted(synced: User) -> None:
    before = mirror_view(synced.layout)
    valid_edit(synced.root, file_names(synced.root)[1], drop=200)  # 3.3% of 6,000 rows

    refused = synced.sync()

    assert refused.code == 1, refused.text
    assert "row_loss_within_limit" in refused.err and "--accept-row-loss" in refused.err
    assert mirror_view(synced.layout) == before

    synced.reset_counts()
    accepted = synced.sync("--accept-row-loss")

    assert accepted.code == 0, accepted.text
    assert synced.requests()["lfs_get"] == 0, "the file that passed stays staged"
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def _with_resolution_status(table: pa.Table) -> pa.Table:
    return table.append_column("resolution_status", pa.array(["accepted"] * table.num_rows))


def test_accept_schema_change_never_lets_a_changed_type_through(synced: User) -> None:
    before = mirror_view(synced.layout)
    for name in file_names(synced.root):
        edit_upstream(synced.folder / name, _float32_emb)

    outcome = synced.sync("--accept-schema-change")

    assert outcome.code == 1, outcome.text
    assert "schema_matches_contract" in outcome.err
    assert mirror_view(synced.layout) == before


def test_an_added_column_is_refused_then_accepted_once_and_kept(synced: User) -> None:
    """Upstream adds `resolution_status` to every file: refused until the user accepts; then
    the extended schema is the config's contract and later syncs need no flag."""
    before = mirror_view(synced.layout)
    for name in file_names(synced.root):
        edit_upstream(synced.folder / name, _with_resolution_status)

    refused = synced.sync()
    assert refused.code == 1, refused.text
    assert "extra column 'resolution_status'" in refused.err
    assert "--accept-schema-change" in refused.err
    assert mirror_view(synced.layout) == before

    synced.reset_counts()
    accepted = synced.sync("--accept-schema-change")
    assert accepted.code == 0, accepted.text
    assert synced.requests()["lfs_get"] == 0, "files refused only for their schema stay staged"
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    assert "resolution_status" in manifest(synced.layout).schema.names

    name = file_names(synced.root)[0]
    edit_upstream(
        synced.folder / name,
        lambda t: t.set_column(
            t.schema.get_field_index("resolution_status"),
            "resolution_status",
            pa.array(["revised"] * t.num_rows),
        ),
    )
    later = synced.sync()
    assert later.code == 0, later.text


def test_accept_schema_change_publishes_drift_from_the_last_validated_schema(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release whose contract adds a column: the mirror's last validated schema lacks it, so
    the drift needs the user's consent once."""
    contract = expected_schema(CONFIG).append(pa.field("resolution_status", pa.string()))
    for reader in (facts, gate):  # the modules that read the contract during a resync
        monkeypatch.setattr(reader, "expected_schema", lambda config: contract)
    before = mirror_view(synced.layout)
    for name in file_names(synced.root):
        edit_upstream(synced.folder / name, _with_resolution_status)

    refused = synced.sync()

    assert refused.code == 1, refused.text
    assert "schema_matches_last_validated" in refused.err
    assert "extra column 'resolution_status'" in refused.err
    assert "--accept-schema-change" in refused.err
    assert mirror_view(synced.layout) == before

    synced.reset_counts()
    accepted = synced.sync("--accept-schema-change")

    assert accepted.code == 0, accepted.text
    assert synced.requests()["lfs_get"] == 0, "files that passed stay staged"
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    assert manifest(synced.layout).schema == contract


# --- the Hub misbehaving ----------------------------------------------------------------------


#: (faults, what proves they were met: the Hub's request counts and the client's waits)
FAULTS: dict[str, tuple[list[Fault], Callable[[dict[str, int], HubSleeps], bool]]] = {
    "429 with Retry-After": (
        [Fault("rate_limit", request_kind="info", retry_after=7, times=1)],
        lambda requests, sleeps: sleeps.asked == [7.0],
    ),
    "503 on dataset info": (
        [Fault("status", request_kind="info", status=503, times=2)],
        lambda requests, sleeps: len(sleeps.asked) == 2,
    ),
    "500 on a blob GET": (
        [Fault("status", request_kind="lfs_get", status=500, times=1)],
        lambda requests, sleeps: requests["lfs_get"] == 2,
    ),
    "a cut body": (
        [Fault("cut", request_kind="lfs_get", after_bytes=300_000, times=1)],
        lambda requests, sleeps: requests["range_requests"] == 1,
    ),
    "a slow response": (
        [
            Fault("delay", request_kind="resolve_head", delay_s=1.0, times=1),
            Fault("bandwidth", request_kind="lfs_get", bytes_per_s=3_000_000, times=1),
        ],
        lambda requests, sleeps: sleeps.asked == [],
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_sync_completes_through_a_misbehaving_hub(
    synced: User, hub_sleeps: HubSleeps, fault: str
) -> None:
    faults, met = FAULTS[fault]
    edited = file_names(synced.root)[0]
    valid_edit(synced.root, edited)
    for each in faults:
        synced.hub.add_fault(each)

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.hub.faults.active() == [], "every fault was met"
    assert met(synced.requests(), hub_sleeps), (synced.requests(), hub_sleeps.asked)
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    size = (synced.folder / edited).stat().st_size
    assert size <= synced.bytes_served() < size + 1024, "no byte sent twice (error bodies aside)"


def _killed_mid_download(user: User, *argv: str) -> int:
    """The pid of `sync_process(*argv)`, killed (SIGKILL) once a download is under way."""
    user.hub.add_fault(Fault("bandwidth", request_kind="lfs_get", bytes_per_s=250_000))
    partials = user.layout.partial_dir(CONFIG)
    killed = sync_process(*argv)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 100_000 for p in partials.glob("*.part")):
            assert killed.poll() is None, "the sync ended before it could be killed"
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    return killed.pid


def test_a_killed_sync_resumes_with_a_range_request_and_frees_its_slot(user: User) -> None:
    killed_pid = _killed_mid_download(user)
    partials = user.layout.partial_dir(CONFIG)
    kept = sum(p.stat().st_size for p in partials.glob("*.part"))
    with user.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={PID_TAG: str(killed_pid)}))
        assert run.status == dg.DagsterRunStatus.STARTED, "the killed run still holds its slot"
    user.hub.reset()

    outcome = user.sync()

    assert outcome.code == 0, outcome.text
    assert "waiting for resync run" not in outcome.err
    assert user.requests()["range_requests"] >= 1
    sizes = sum((user.folder / n).stat().st_size for n in file_names(user.root))
    assert user.bytes_served() == sizes - kept, "the partials were resumed, not fetched again"
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    with user.instance() as instance:
        after = instance.get_run_by_id(run.run_id)
        assert after is not None and after.status == dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize("sensor", ["upstream_change_sensor", "mirror_change_sensor"])
def test_a_launched_run_whose_worker_died_is_failed_by_the_next_sensor_tick(
    user: User, sensor: str
) -> None:
    """A run the daemon launched, its run worker killed (and its code server with it, as when
    `make dev` is stopped): no command line recorded its process, its executor did. Either
    sensor's tick fails it (`mirror_change_sensor` runs by default, the other is turned on)."""
    killed_pid = _killed_mid_download(user, "-c", LAUNCHED_RESYNC)
    with user.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={RESYNC_TAG: CONFIG}))
        assert run.status == dg.DagsterRunStatus.STARTED, "nothing else would ever end it"
        assert (run.tags[SOURCE_TAG], run.tags[PID_TAG]) == ("sensor", str(killed_pid))
        user.hub.reset()

        tick(instance, sensor, Settings.from_env())

        after = instance.get_run_by_id(run.run_id)
        assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
    assert user.sync().code == 0


def test_a_force_push_mid_sync_is_replanned_against_the_new_head(user: User) -> None:
    user.hub.add_fault(Fault("delay", request_kind="resolve_head", delay_s=1.0, times=1))
    rewritten: list[str] = []

    def force_push_once_a_download_began() -> None:
        deadline = time.monotonic() + 60
        while user.requests()["resolve_head"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        rewritten.append(user.hub.force_push())

    pusher = threading.Thread(target=force_push_once_a_download_began)
    pusher.start()
    outcome = user.sync()
    pusher.join()

    assert outcome.code == 0, outcome.text
    assert "re-planning against the new head" in outcome.err
    assert manifest(user.layout).upstream_commit == rewritten[0] == user.hub.head_commit()
    staged = load_staged(user.layout, CONFIG)
    assert staged is not None and staged.replans == 1
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    sizes = sum((user.folder / n).stat().st_size for n in file_names(user.root))
    assert user.bytes_served() == sizes, "files that landed before the force-push are kept"


# --- the token, access and settings -------------------------------------------------------------


@pytest.fixture
def gated(
    hub_root: Path,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[User]:
    """A user of a gated repo: the Hub answers only requests that carry TOKEN."""
    with LocalHub(hub_root, token=TOKEN) as hub:
        yield make_user(hub, hub_root, tmp_path / "home", dagster_home, monkeypatch, capsys)


def test_the_token_never_appears_in_logs_metadata_run_config_or_files(
    gated: User,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    hub_sleeps: HubSleeps,
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    gated.hub.add_fault(Fault("rate_limit", request_kind="lfs_get", times=1))  # a logged retry

    outcomes = [gated.sync(), gated.tol("status", "--json")]

    assert [o.code for o in outcomes] == [0, 0], [o.text for o in outcomes]
    assert hub_sleeps.asked, "the retry happened"
    seen = [o.text for o in outcomes] + [caplog.text]
    with gated.instance() as instance:
        for run in instance.get_runs():
            seen += [repr(run.run_config), repr(run.tags)]
            seen += [dg.serialize_value(entry) for entry in instance.all_logs(run.run_id)]
    assert len(seen) > 20
    assert not [text for text in seen if TOKEN in text]
    for folder in (gated.home, gated.dagster_home):
        leaked = [p for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
        assert not leaked


def test_a_gated_repo_without_a_token_exits_3_and_says_to_set_hf_token(gated: User) -> None:
    outcome = gated.sync()

    assert outcome.code == 3, outcome.text
    assert "HF_TOKEN" in outcome.err
    assert not gated.layout.mirror_dir(CONFIG).exists()


@pytest.mark.parametrize(
    ("env", "argv", "named"),
    [
        ({"TOL_CONFIGS": "not a config!"}, [], "TOL_CONFIGS"),
        ({}, ["--config", "bioclip-9_float16"], "--config"),
        ({"TOL_CONFIGS": "no-such-folder"}, [], "no-such-folder"),
        ({"TOL_MAX_ROW_LOSS": "2"}, [], "TOL_MAX_ROW_LOSS"),
    ],
    ids=["invalid TOL_CONFIGS", "unknown --config", "config missing upstream", "bad knob"],
)
def test_bad_settings_exit_2_naming_the_setting(
    user: User, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    outcome = user.sync(*argv)

    assert outcome.code == 2, outcome.text
    assert named in outcome.err
    assert user.file_requests() == dict.fromkeys(user.file_requests(), 0)


def test_status_reports_the_last_published_change_by_uuid(synced: User) -> None:
    valid_edit(synced.root, file_names(synced.root)[0], drop=3)
    assert synced.sync().code == 0

    change = json.loads(synced.tol("status", "--json").out)["configs"][CONFIG]["last_change"]
    assert (change["added"], change["removed"]) == (0, 3)
    assert sum(t["removed"] for t in change["taxa"]) == 3
    text = synced.tol("status").out
    assert "+0 / -3 rows by uuid" in text


# --- bounded waits and untrusted answers ---------------------------------------------------------


def test_a_days_retry_after_is_waited_at_most_tol_max_retry_wait_s(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_MAX_RETRY_WAIT_S", "5")
    valid_edit(synced.root, file_names(synced.root)[0])
    synced.hub.add_fault(Fault("rate_limit", request_kind="lfs_get", retry_after=86400, times=1))

    started = time.monotonic()
    outcome = synced.sync()
    elapsed = time.monotonic() - started

    assert outcome.code == 0, outcome.text
    assert 5.0 <= elapsed < 90.0, elapsed
    assert synced.hub.faults.active() == []
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_429s_that_never_stop_exit_3_naming_the_setting(
    synced: User, monkeypatch: pytest.MonkeyPatch, hub_sleeps: HubSleeps
) -> None:
    monkeypatch.setenv("TOL_MAX_RETRY_WAIT_S", "5")
    valid_edit(synced.root, file_names(synced.root)[0])
    before = mirror_view(synced.layout)
    synced.hub.add_fault(Fault("rate_limit", request_kind="lfs_get", retry_after=86400))

    outcome = synced.sync()

    assert outcome.code == 3, outcome.text
    assert "HTTP 429" in outcome.err and "TOL_MAX_RETRY_WAIT_S" in outcome.err
    assert hub_sleeps.asked and set(hub_sleeps.asked) == {5.0}, hub_sleeps.asked
    assert mirror_view(synced.layout) == before


def test_429s_do_not_use_up_the_retries_for_5xx(synced: User, hub_sleeps: HubSleeps) -> None:
    valid_edit(synced.root, file_names(synced.root)[0])
    # Each request takes one of each while both last: 5 x 500 (of 6 attempts), then 8 x 429.
    synced.hub.add_fault(Fault("status", request_kind="lfs_get", status=500, times=5))
    synced.hub.add_fault(Fault("rate_limit", request_kind="lfs_get", retry_after=1, times=13))

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert synced.requests()["lfs_get"] == 14
    assert hub_sleeps.asked == [1.0, 2.0, 4.0, 8.0, 16.0] + [1.0] * 8  # backoff, then as asked
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_a_stalled_download_exits_3_naming_the_file_and_tol_stall_timeout_s(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_STALL_TIMEOUT_S", "2")
    edited = file_names(synced.root)[0]
    valid_edit(synced.root, edited)
    before = mirror_view(synced.layout)
    synced.hub.add_fault(Fault("stall", request_kind="lfs_get", after_bytes=100_000, delay_s=120))

    started = time.monotonic()
    outcome = synced.sync()

    assert outcome.code == 3, outcome.text
    assert time.monotonic() - started < 60.0
    assert edited in outcome.err and "stalled" in outcome.err
    assert "TOL_STALL_TIMEOUT_S=2" in outcome.err
    assert mirror_view(synced.layout) == before

    synced.hub.reset()
    assert synced.sync().code == 0
    assert synced.requests()["range_requests"] == 1, "the next sync resumes the partial"
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_a_sync_past_tol_sync_deadline_s_exits_3(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOL_SYNC_DEADLINE_S", "6")
    valid_edit(synced.root, file_names(synced.root)[0])
    before = mirror_view(synced.layout)
    synced.hub.add_fault(Fault("bandwidth", request_kind="lfs_get", bytes_per_s=50_000))

    started = time.monotonic()
    outcome = synced.sync()

    assert outcome.code == 3, outcome.text
    assert time.monotonic() - started < 30.0
    assert "TOL_SYNC_DEADLINE_S" in outcome.err
    assert mirror_view(synced.layout) == before


HOSTILE_ANSWERS: dict[str, tuple[str, dict[str, object], str]] = {
    "sha256 climbing out": ("tree", {"0.lfs.oid": "../../x"}, "sha256"),
    "path with ..": ("tree", {"0.path": f"{CONFIG}/../../../x.parquet"}, "file path"),
    "negative size": ("tree", {"0.lfs.size": -1}, "size"),
    "commit not hex": ("info", {"sha": "../../" + "z" * 34}, "commit id"),
}


@pytest.mark.parametrize("case", list(HOSTILE_ANSWERS))
def test_a_hostile_hub_answer_exits_3_and_changes_nothing(synced: User, case: str) -> None:
    request_kind, edits, what = HOSTILE_ANSWERS[case]
    valid_edit(synced.root, file_names(synced.root)[0])
    before = mirror_view(synced.layout)
    store = sorted(p.relative_to(synced.home) for p in synced.layout.store_dir(CONFIG).rglob("*"))
    synced.hub.add_fault(Fault("rewrite", request_kind=request_kind, edits=edits))

    outcome = synced.sync()

    assert outcome.code == 3, outcome.text
    causes = [line.strip() for line in outcome.err.splitlines() if "upstream sent" in line]
    assert causes and f"upstream sent an invalid {what}: " in causes[0], outcome.err
    assert mirror_view(synced.layout) == before
    assert synced.file_requests() == dict.fromkeys(synced.file_requests(), 0)
    after = sorted(p.relative_to(synced.home) for p in synced.layout.store_dir(CONFIG).rglob("*"))
    locks = {".lock", ".resync.lock", ".resync.holder"}  # the store's and the lease's bookkeeping
    assert [p for p in after if p not in store and p.name not in locks] == []


def test_tree_entries_outside_the_config_folder_are_ignored(synced: User) -> None:
    valid_edit(synced.root, file_names(synced.root)[0])
    for path in (f"other/{file_names(synced.root)[1]}", f"{CONFIG}/deeper/x.parquet"):
        entry = {"type": "file", "path": path, "size": 5, "oid": "0" * 40}
        entry["lfs"] = {"oid": "3" * 64, "size": 5, "pointerSize": 130}
        synced.hub.add_fault(Fault("rewrite", request_kind="tree", edits={"-": entry}))

    outcome = synced.sync()

    assert outcome.code == 0, outcome.text
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)
    assert synced.requests()["lfs_get"] == 1

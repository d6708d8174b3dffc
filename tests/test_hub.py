"""Hub access against the local Hub with the real client: counts, retries, resume, verification."""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub.utils import XetFileData, get_session

from tol_dagster.devtools.localhub import Fault, LocalHub
from tol_dagster.errors import (
    IntegrityError,
    RevisionGone,
    SettingsError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamInvalid,
)
from tol_dagster.hub import download, failures, partial
from tol_dagster.hub.card import render_card, with_config
from tol_dagster.hub.client import HubClient
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.hub.retry import RetryPolicy

REPO_ID = "test-org/tiny-tol"
CONFIG = "emb_float16"
ROWS_PER_FILE = 300
TOKEN = "hf_test_SECRET_token_0123456789"
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=5.0)


def _write_parquet(path: Path, rows: int, seed: int) -> None:
    """A small real parquet file; a random payload keeps it ~300 KB and incompressible."""
    rng = random.Random(seed)
    table = pa.table(
        {
            "uuid": [f"{seed:04d}-{i:06d}" for i in range(rows)],
            "emb": [rng.randbytes(1000) for _ in range(rows)],
        }
    )
    pq.write_table(table, path, compression="none")


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A repo folder: card, three parquet files, plus files the config listing must skip."""
    root = tmp_path / "hub_root"
    folder = root / CONFIG
    (folder / "nested").mkdir(parents=True)
    for i in range(3):
        _write_parquet(folder / f"train-{i:05d}-of-00003.parquet", ROWS_PER_FILE, seed=i)
    _write_parquet(folder / "nested" / "extra.parquet", 10, seed=9)
    (folder / "notes.txt").write_text("not data\n")
    (root / "other_config").mkdir()
    _write_parquet(root / "other_config" / "train-00000-of-00001.parquet", 10, seed=8)
    card = with_config({}, CONFIG, num_examples=3 * ROWS_PER_FILE)
    (root / "README.md").write_text(render_card(card, "# tiny\n"))
    return root


@pytest.fixture
def hub(tiny_root: Path) -> Iterator[LocalHub]:
    with LocalHub(tiny_root, repo_id=REPO_ID) as running:
        yield running


@pytest.fixture
def client(hub: LocalHub) -> HubClient:
    return HubClient(hub.endpoint, REPO_ID, None, retry=FAST)


@pytest.fixture
def planned(client: HubClient, hub: LocalHub) -> RemoteConfig:
    remote = client.remote_config(CONFIG)
    hub.reset()
    return remote


def _requests(hub: LocalHub) -> dict[str, int]:
    return {kind: v["count"] for kind, v in hub.stats().items() if v["count"]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(client: HubClient, remote: RemoteConfig, tmp_path: Path, index: int = 0) -> Path:
    file = remote.files[index]
    return client.download(
        file, remote.commit, tmp_path / "mirror" / file.name, partial_dir=tmp_path / "partials"
    )


# -- metadata ---------------------------------------------------------------------------------


def test_head_commit_is_one_request(client: HubClient, hub: LocalHub) -> None:
    hub.reset()
    assert client.head_commit() == hub.head_commit()
    assert _requests(hub) == {"info": 1}


def test_remote_config_gives_each_parquet_files_sha256_and_the_cards_count(
    client: HubClient, hub: LocalHub, tiny_root: Path
) -> None:
    hub.reset()
    remote = client.remote_config(CONFIG)

    on_disk = sorted((tiny_root / CONFIG).glob("*.parquet"))
    assert [f.path for f in remote.files] == [f"{CONFIG}/{p.name}" for p in on_disk]
    assert [f.sha256 for f in remote.files] == [_sha256(p) for p in on_disk]
    assert [f.size for f in remote.files] == [p.stat().st_size for p in on_disk]
    assert remote.files[0].name == on_disk[0].name
    assert remote.expected_rows == 3 * ROWS_PER_FILE
    assert (remote.repo_id, remote.config, remote.commit) == (REPO_ID, CONFIG, hub.head_commit())
    assert _requests(hub) == {"info": 1, "tree": 1}


def test_remote_config_is_pinned_to_the_commit_asked_for(
    client: HubClient, tiny_root: Path
) -> None:
    before = client.remote_config(CONFIG)
    edited = tiny_root / CONFIG / before.files[1].name
    _write_parquet(edited, ROWS_PER_FILE + 1, seed=42)
    card = with_config({}, CONFIG, num_examples=3 * ROWS_PER_FILE + 1)
    (tiny_root / "README.md").write_text(render_card(card, "# tiny\n"))

    after = client.remote_config(CONFIG)
    again = client.remote_config(CONFIG, before.commit)

    assert after.commit != before.commit
    assert after.files[1].sha256 == _sha256(edited) != before.files[1].sha256
    assert after.expected_rows == 3 * ROWS_PER_FILE + 1
    assert again == before
    assert client.card(before.commit)["dataset_info"] != client.card(after.commit)["dataset_info"]


def test_a_config_folder_missing_upstream_is_a_settings_error(client: HubClient) -> None:
    with pytest.raises(SettingsError, match="no folder 'no_such_config'"):
        client.remote_config("no_such_config")


# -- download and verification ----------------------------------------------------------------


def test_download_writes_the_verified_file_and_reports_progress(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path
) -> None:
    file = planned.files[0]
    seen: list[int] = []
    dest = client.download(
        file,
        planned.commit,
        tmp_path / "mirror" / file.name,
        partial_dir=tmp_path / "partials",
        on_progress=seen.append,
    )
    assert dest == tmp_path / "mirror" / file.name
    assert _sha256(dest) == file.sha256
    assert sum(seen) == file.size
    assert list((tmp_path / "partials").iterdir()) == []
    assert _requests(hub) == {"resolve_head": 1, "lfs_get": 1}


def test_a_sha256_mismatch_raises_and_leaves_neither_dest_nor_partial(
    client: HubClient, planned: RemoteConfig, tmp_path: Path
) -> None:
    real = planned.files[0]
    wrong = RemoteFile(real.path, real.size, "0" * 64)
    dest = tmp_path / "mirror" / real.name
    with pytest.raises(IntegrityError) as raised:
        client.download(wrong, planned.commit, dest, partial_dir=tmp_path / "partials")
    message = str(raised.value)
    assert real.path in message and wrong.sha256 in message and real.sha256 in message
    assert not dest.exists()
    assert list((tmp_path / "partials").iterdir()) == []


def test_a_size_mismatch_raises_integrity_error(
    client: HubClient, planned: RemoteConfig, tmp_path: Path
) -> None:
    real = planned.files[0]
    longer = RemoteFile(real.path, real.size + 10, real.sha256)
    with pytest.raises(IntegrityError, match=f"{real.size} bytes"):
        client.download(longer, planned.commit, tmp_path / real.name, partial_dir=tmp_path / "p")
    assert not (tmp_path / real.name).exists()


def test_parallel_downloads_in_threads_all_verify(
    client: HubClient, planned: RemoteConfig, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(
            pool.map(lambda i: _download(client, planned, tmp_path, i), range(len(planned.files)))
        )
    assert [_sha256(p) for p in paths] == [f.sha256 for f in planned.files]


# -- resume -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hand_over", "cut_at"),
    [(partial.HAND_OVER_BYTES, 100_000), (100_000, 250_000)],
    ids=["all-held", "after-two-hand-overs"],
)
def test_a_cut_body_is_resumed_with_a_range_request_at_the_cut(
    client: HubClient,
    planned: RemoteConfig,
    hub: LocalHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hand_over: int,
    cut_at: int,
) -> None:
    """Bytes reach the partial a mebibyte at a time (`hub.partial`): whether the ~300 KB file
    is cut with all its bytes still held or after some were handed over, the resume asks for
    the bytes after the cut, none lost, none fetched twice."""
    monkeypatch.setattr(partial, "HAND_OVER_BYTES", hand_over)
    file = planned.files[0]
    hub.add_fault(
        Fault(kind="cut", pattern="*.parquet", request_kind="lfs_get", after_bytes=cut_at, times=1)
    )
    dest = _download(client, planned, tmp_path)
    assert _sha256(dest) == file.sha256
    stats = hub.stats()
    assert stats["range_requests"]["bytes"] == file.size - cut_at
    assert stats["lfs_get"]["bytes"] == file.size  # nothing fetched twice


def test_a_partial_left_by_a_killed_download_is_resumed(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tiny_root: Path, tmp_path: Path
) -> None:
    file = planned.files[0]
    prefix = (tiny_root / file.path).read_bytes()[:123_456]
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / f"{file.sha256}.part").write_bytes(prefix)

    seen: list[int] = []
    dest = client.download(
        file,
        planned.commit,
        tmp_path / file.name,
        partial_dir=tmp_path / "partials",
        on_progress=seen.append,
    )
    assert _sha256(dest) == file.sha256
    assert sum(seen) == file.size - len(prefix)
    stats = hub.stats()
    assert stats["range_requests"]["bytes"] == stats["lfs_get"]["bytes"] == file.size - len(prefix)


def test_a_corrupt_partial_is_fetched_again_from_byte_zero(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path
) -> None:
    file = planned.files[0]
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / f"{file.sha256}.part").write_bytes(b"\0" * 1000)
    dest = _download(client, planned, tmp_path)
    assert _sha256(dest) == file.sha256
    assert hub.stats()["lfs_get"]["bytes"] == file.size - 1000 + file.size


def test_a_complete_partial_costs_no_request(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tiny_root: Path, tmp_path: Path
) -> None:
    file = planned.files[0]
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / f"{file.sha256}.part").write_bytes(
        (tiny_root / file.path).read_bytes()
    )
    assert _sha256(_download(client, planned, tmp_path)) == file.sha256
    assert _requests(hub) == {}


# -- retries ----------------------------------------------------------------------------------


def test_retry_after_on_a_429_is_honoured(client: HubClient, hub: LocalHub) -> None:
    hub.reset()
    hub.add_fault(Fault(kind="rate_limit", request_kind="info", retry_after=1, times=1))
    started = time.monotonic()
    assert client.head_commit() == hub.head_commit()
    assert time.monotonic() - started >= 1.0
    assert _requests(hub) == {"info": 2}


def test_a_5xx_on_dataset_info_is_retried(client: HubClient, hub: LocalHub) -> None:
    hub.reset()
    hub.add_fault(Fault(kind="status", status=503, request_kind="info", times=2))
    assert client.head_commit() == hub.head_commit()
    assert _requests(hub) == {"info": 3}


def test_a_5xx_on_the_tree_listing_is_retried(client: HubClient, hub: LocalHub) -> None:
    hub.add_fault(Fault(kind="status", status=502, request_kind="tree", times=1))
    assert len(client.remote_config(CONFIG).files) == 3


@pytest.mark.parametrize("request_kind", ["resolve_head", "lfs_get"])
def test_a_5xx_on_the_blob_requests_is_retried(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path, request_kind: str
) -> None:
    hub.add_fault(Fault(kind="status", status=500, request_kind=request_kind, times=2))
    assert _sha256(_download(client, planned, tmp_path)) == planned.files[0].sha256
    assert _requests(hub)[request_kind] == 3


def test_a_cdn_refusing_its_signed_url_is_retried_with_a_fresh_one(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path
) -> None:
    hub.add_fault(Fault(kind="status", status=403, request_kind="lfs_get", times=1))
    assert _sha256(_download(client, planned, tmp_path)) == planned.files[0].sha256
    assert _requests(hub) == {"resolve_head": 2, "lfs_get": 2}


def test_a_403_from_the_hub_itself_is_an_auth_error(client: HubClient, hub: LocalHub) -> None:
    hub.add_fault(Fault(kind="status", status=403, request_kind="info"))
    with pytest.raises(UpstreamAuthError, match="HTTP 403"):
        client.head_commit()
    assert _requests(hub)["info"] == 1


def test_a_slow_answer_times_out_and_is_retried(hub: LocalHub) -> None:
    impatient = HubClient(
        hub.endpoint, REPO_ID, None, retry=RetryPolicy(base_delay_s=0.01, timeout_s=0.3)
    )
    hub.reset()
    hub.add_fault(Fault(kind="delay", delay_s=1.5, request_kind="info", times=1))
    started = time.monotonic()
    assert impatient.head_commit() == hub.head_commit()
    assert time.monotonic() - started < 1.4


def test_giving_up_names_the_endpoint_and_what_was_tried(client: HubClient, hub: LocalHub) -> None:
    hub.add_fault(Fault(kind="status", status=503, request_kind="info"))
    with pytest.raises(UpstreamError) as raised:
        client.head_commit()
    message = str(raised.value)
    assert hub.endpoint in message and "dataset_info" in message
    assert f"after {FAST.attempts} attempts" in message and "HTTP 503" in message
    assert _requests(hub)["info"] == FAST.attempts


def test_an_unreachable_hub_is_an_upstream_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on: bound, never listened
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
        client = HubClient(endpoint, REPO_ID, None, retry=FAST)
        with pytest.raises(UpstreamError, match="connection failed") as raised:
            client.head_commit()
    assert endpoint in str(raised.value)


def test_the_server_wait_prefers_a_spent_ratelimit_then_retry_after() -> None:
    spent = httpx2.Headers({"RateLimit": '"api";r=0;t=7', "Retry-After": "2"})
    left = httpx2.Headers({"RateLimit": '"api";r=5;t=7', "Retry-After": "2"})
    assert failures._server_wait(spent) == 7.0
    assert failures._server_wait(left) == 2.0
    assert failures._server_wait(httpx2.Headers({})) is None


# -- upstream changes and access --------------------------------------------------------------


def test_a_force_push_after_planning_raises_revision_gone(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path
) -> None:
    hub.force_push()
    with pytest.raises(RevisionGone, match="re-plan"):
        _download(client, planned, tmp_path)
    with pytest.raises(RevisionGone):
        client.remote_config(CONFIG, planned.commit)
    assert client.remote_config(CONFIG).commit == hub.head_commit() != planned.commit


def test_a_file_whose_bytes_are_gone_at_the_pinned_commit_raises_revision_gone(
    client: HubClient, planned: RemoteConfig, tiny_root: Path, tmp_path: Path
) -> None:
    _write_parquet(tiny_root / planned.files[0].path, ROWS_PER_FILE, seed=77)
    with pytest.raises(RevisionGone, match=planned.files[0].path):
        _download(client, planned, tmp_path)


@pytest.fixture
def gated_hub(tiny_root: Path) -> Iterator[LocalHub]:
    with LocalHub(tiny_root, repo_id=REPO_ID, token=TOKEN) as running:
        yield running


@pytest.mark.parametrize("token", [None, "hf_wrong_SECRET_token"])
def test_a_gated_repo_without_the_right_token_is_an_auth_error(
    gated_hub: LocalHub, token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = HubClient(gated_hub.endpoint, REPO_ID, token, retry=FAST)
    for call in (client.head_commit, lambda: client.remote_config(CONFIG)):
        with pytest.raises(UpstreamAuthError) as raised:
            call()
        message = str(raised.value)
        assert "HF_TOKEN" in message and "hf auth login" in message and "terms" in message
        assert "SECRET" not in message
    assert "SECRET" not in caplog.text


def test_the_token_goes_to_the_hub_origin_but_never_to_the_cdn(
    gated_hub: LocalHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def record(request: httpx2.Request) -> None:
        with lock:
            seen.append(
                (
                    f"{request.url.scheme}://{request.url.netloc.decode()}",
                    "authorization" in request.headers,
                )
            )

    hooks = get_session().event_hooks["request"]
    hooks.append(record)
    try:
        client = HubClient(gated_hub.endpoint, REPO_ID, TOKEN, retry=FAST)
        remote = client.remote_config(CONFIG)
        gated_hub.add_fault(Fault(kind="status", status=503, request_kind="lfs_get", times=1))
        dest = _download(client, remote, tmp_path)
    finally:
        hooks.remove(record)

    assert _sha256(dest) == remote.files[0].sha256
    to_hub = [auth for origin, auth in seen if origin == gated_hub.endpoint]
    to_cdn = [auth for origin, auth in seen if origin == gated_hub.cdn_endpoint]
    assert len(to_hub) == 4 and all(to_hub)  # info, tree, two HEADs
    assert len(to_cdn) == 2 and not any(to_cdn)
    assert TOKEN not in caplog.text and "SECRET" not in repr(client)


# -- Xet --------------------------------------------------------------------------------------


def _offer_xet(monkeypatch: pytest.MonkeyPatch, fake_xet_get: object) -> None:
    """The local Hub never offers Xet: announce it on the HEAD and stand in for hf_xet."""
    real_metadata = download.get_hf_file_metadata

    def with_xet(*args: object, **kwargs: object) -> object:
        meta = real_metadata(*args, **kwargs)  # type: ignore[arg-type]
        xet = XetFileData(file_hash="f" * 64, refresh_route="/xet-read-token")
        return type(meta)(meta.commit_hash, meta.etag, meta.location, meta.size, xet)

    monkeypatch.setattr(download, "get_hf_file_metadata", with_xet)
    monkeypatch.setattr(download, "_xet_enabled", lambda: True)
    monkeypatch.setattr(download, "xet_get", fake_xet_get)


def test_xet_is_used_when_offered_and_its_bytes_are_verified(
    client: HubClient,
    planned: RemoteConfig,
    hub: LocalHub,
    tiny_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = planned.files[0]
    calls: list[Path] = []

    def fake_xet_get(*, incomplete_path: Path, expected_size: int, **_: object) -> None:
        calls.append(incomplete_path)
        incomplete_path.write_bytes((tiny_root / file.path).read_bytes()[:expected_size])

    _offer_xet(monkeypatch, fake_xet_get)
    assert _sha256(_download(client, planned, tmp_path)) == file.sha256
    assert calls == [tmp_path / "partials" / f"{file.sha256}.part"]
    assert "lfs_get" not in _requests(hub)


def test_a_failing_xet_download_falls_back_to_http(
    client: HubClient,
    planned: RemoteConfig,
    hub: LocalHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_xet_get(**_: object) -> None:
        raise RuntimeError("xet stalled")

    _offer_xet(monkeypatch, broken_xet_get)
    assert _sha256(_download(client, planned, tmp_path)) == planned.files[0].sha256
    assert _requests(hub)["lfs_get"] == 1


# -- bounded waits ----------------------------------------------------------------------------


def test_a_days_retry_after_is_capped_at_the_policys_longest_wait(hub: LocalHub) -> None:
    capped = HubClient(
        hub.endpoint, REPO_ID, None, retry=RetryPolicy(base_delay_s=0.01, max_server_wait_s=1)
    )
    hub.reset()
    hub.add_fault(Fault(kind="rate_limit", request_kind="info", retry_after=86400, times=2))
    started = time.monotonic()
    assert capped.head_commit() == hub.head_commit()
    assert 2.0 <= time.monotonic() - started < 10.0
    assert _requests(hub) == {"info": 3}


def test_429s_do_not_use_up_the_5xx_retries(client: HubClient, hub: LocalHub) -> None:
    hub.reset()
    # Each request takes one of each fault while both last: 3 x 503, then 6 x 429, then success.
    hub.add_fault(Fault(kind="status", status=503, request_kind="info", times=3))
    hub.add_fault(Fault(kind="rate_limit", request_kind="info", retry_after=0, times=9))
    assert FAST.attempts == 4 < 3 + 6 < FAST.rate_limit_attempts + FAST.attempts
    assert client.head_commit() == hub.head_commit()
    assert _requests(hub) == {"info": 10}


def test_429s_that_never_stop_give_up_on_their_own_budget_naming_the_setting(
    hub: LocalHub,
) -> None:
    policy = RetryPolicy(base_delay_s=0.01, max_server_wait_s=0, rate_limit_attempts=3)
    client = HubClient(hub.endpoint, REPO_ID, None, retry=policy)
    hub.reset()
    hub.add_fault(Fault(kind="rate_limit", request_kind="info", retry_after=86400))
    with pytest.raises(UpstreamError) as raised:
        client.head_commit()
    message = str(raised.value)
    assert "HTTP 429" in message and "3 times" in message and "TOL_MAX_RETRY_WAIT_S" in message
    assert "86400" in message
    assert _requests(hub) == {"info": 3}


def test_a_stalled_body_fails_naming_the_file_and_the_setting(
    hub: LocalHub, planned: RemoteConfig, tmp_path: Path
) -> None:
    policy = RetryPolicy(base_delay_s=0.01, timeout_s=30.0, stall_timeout_s=1.0)
    client = HubClient(hub.endpoint, REPO_ID, None, retry=policy)
    hub.add_fault(Fault(kind="stall", request_kind="lfs_get", after_bytes=50_000, delay_s=60))
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        _download(client, planned, tmp_path)
    assert time.monotonic() - started < 10.0
    message = str(raised.value)
    assert planned.files[0].path in message
    assert "stalled" in message and "TOL_STALL_TIMEOUT_S=1" in message
    assert (tmp_path / "partials" / f"{planned.files[0].sha256}.part").stat().st_size == 50_000


def test_a_slow_body_that_keeps_coming_is_no_stall(
    hub: LocalHub, planned: RemoteConfig, tmp_path: Path
) -> None:
    policy = RetryPolicy(base_delay_s=0.01, stall_timeout_s=1.0)
    client = HubClient(hub.endpoint, REPO_ID, None, retry=policy)
    hub.add_fault(Fault(kind="bandwidth", request_kind="lfs_get", bytes_per_s=200_000))
    started = time.monotonic()
    assert _sha256(_download(client, planned, tmp_path)) == planned.files[0].sha256
    assert time.monotonic() - started > 1.0  # ~1.5 s: longer than the stall timeout


def test_a_download_past_the_deadline_fails_naming_the_setting(
    hub: LocalHub, planned: RemoteConfig, tmp_path: Path
) -> None:
    client = HubClient(hub.endpoint, REPO_ID, None, retry=RetryPolicy(deadline_s=1.0))
    hub.add_fault(Fault(kind="bandwidth", request_kind="lfs_get", bytes_per_s=100_000))
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="TOL_SYNC_DEADLINE_S") as raised:
        _download(client, planned, tmp_path)
    assert 0.9 < time.monotonic() - started < 2.5
    assert planned.files[0].path in str(raised.value)


def test_the_deadline_counts_from_when_the_run_started(hub: LocalHub) -> None:
    late = HubClient(
        hub.endpoint, REPO_ID, None, retry=RetryPolicy(deadline_s=60), started=time.time() - 61
    )
    with pytest.raises(UpstreamError, match="deadline of 60 s"):
        late.head_commit()


def test_a_server_wait_that_would_pass_the_deadline_fails_at_once(hub: LocalHub) -> None:
    client = HubClient(hub.endpoint, REPO_ID, None, retry=RetryPolicy(deadline_s=5))
    hub.add_fault(Fault(kind="rate_limit", request_kind="info", retry_after=60, times=1))
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="TOL_SYNC_DEADLINE_S"):
        client.head_commit()
    assert time.monotonic() - started < 2.0


# -- untrusted answers ------------------------------------------------------------------------

#: The index of the first parquet file in the tree answer of `tiny_root`'s config folder
#: (after `nested`, `nested/extra.parquet` and `notes.txt`).
FIRST = 3
HOSTILE_TREE = {
    "sha256 climbing out": ({f"{FIRST}.lfs.oid": "../../x"}, "sha256"),
    "uppercase sha256": ({f"{FIRST}.lfs.oid": "A" * 64}, "sha256"),
    "sha256 not a string": ({f"{FIRST}.lfs.oid": 12}, "sha256"),
    "path with ..": ({f"{FIRST}.path": f"{CONFIG}/../{CONFIG}/x.parquet"}, "file path"),
    "absolute path": ({f"{FIRST}.path": f"/{CONFIG}/x.parquet"}, "file path"),
    "control character": ({f"{FIRST}.path": f"{CONFIG}/x\x1b[2J.parquet"}, "file path"),
    "backslash": ({f"{FIRST}.path": f"{CONFIG}/..\\x.parquet"}, "file path"),
    "hidden name": ({f"{FIRST}.path": f"{CONFIG}/.hidden.parquet"}, "file path"),
    "negative size": ({f"{FIRST}.lfs.size": -1}, "size"),
    "size as text": ({f"{FIRST}.lfs.size": "300"}, "size"),
    "absurd size": ({f"{FIRST}.lfs.size": 1 << 60}, "size"),
    "entry not an object": ({"-": "x"}, "tree entry"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TREE))
def test_a_hostile_tree_answer_is_upstream_invalid(
    client: HubClient, hub: LocalHub, case: str
) -> None:
    edits, what = HOSTILE_TREE[case]
    hub.add_fault(Fault(kind="rewrite", request_kind="tree", edits=edits))
    with pytest.raises(UpstreamInvalid) as raised:
        client.remote_config(CONFIG)
    message = str(raised.value)
    assert message.startswith(f"upstream sent an invalid {what}: ")
    assert REPO_ID in message and hub.head_commit()[:12] in message
    assert raised.value.exit_code == 3


def test_a_file_listed_twice_is_upstream_invalid(client: HubClient, hub: LocalHub) -> None:
    first = client.remote_config(CONFIG).files[0]
    twin = {"type": "file", "path": first.path, "size": 1, "oid": "0" * 40}
    twin["lfs"] = {"oid": "1" * 64, "size": 1, "pointerSize": 130}
    hub.add_fault(Fault(kind="rewrite", request_kind="tree", edits={"-": twin}))
    with pytest.raises(UpstreamInvalid, match=r"invalid tree listing: .*listed twice"):
        client.remote_config(CONFIG)


@pytest.mark.parametrize("sha", ["not-a-commit", "A" * 40, "a" * 39, "../" * 14])
def test_a_commit_id_that_is_not_40_hex_is_upstream_invalid(
    client: HubClient, hub: LocalHub, sha: str
) -> None:
    hub.add_fault(Fault(kind="rewrite", request_kind="info", edits={"sha": sha}))
    with pytest.raises(UpstreamInvalid, match=r"^upstream sent an invalid commit id: "):
        client.head_commit()
    with pytest.raises(UpstreamInvalid, match=r"^upstream sent an invalid commit id: "):
        client.remote_config(CONFIG)
    assert _requests(hub).get("tree", 0) == 0


@pytest.mark.parametrize("answer", [[1, 2, 3], "text", None])
def test_dataset_info_that_is_not_an_object_is_upstream_invalid(
    client: HubClient, hub: LocalHub, answer: object
) -> None:
    """The client builds `DatasetInfo(**body)`: a list raised TypeError, an internal error
    (exit 70) in a sync and a crashed tick of the upstream sensor."""
    hub.add_fault(Fault(kind="rewrite", request_kind="info", edits={"": answer}))
    with pytest.raises(UpstreamInvalid, match=r"^upstream sent an invalid dataset info") as raised:
        client.head_commit()
    assert raised.value.exit_code == 3


def test_a_card_row_count_that_is_no_count_is_upstream_invalid(
    client: HubClient, hub: LocalHub
) -> None:
    card = with_config({}, CONFIG, num_examples=5)
    card["dataset_info"][0]["splits"][0]["num_examples"] = -5
    hub.add_fault(Fault(kind="rewrite", request_kind="info", edits={"cardData": card}))
    with pytest.raises(UpstreamInvalid, match=r"^upstream sent an invalid row count: -5"):
        client.remote_config(CONFIG)


def test_entries_outside_the_config_folder_are_ignored(client: HubClient, hub: LocalHub) -> None:
    honest = client.remote_config(CONFIG)
    outside = [
        {"type": "file", "path": path, "size": 10, "oid": "0" * 40}
        | {"lfs": {"oid": "2" * 64, "size": 10, "pointerSize": 130}}
        for path in (
            "other_config/train-00000-of-00003.parquet",
            f"{CONFIG}/nested/train-00000-of-00003.parquet",
            "train-00000-of-00003.parquet",
            f"{CONFIG}/train-00000-of-00003.txt",
        )
    ]
    for entry in outside:  # each fault appends one entry to every tree answer
        hub.add_fault(Fault(kind="rewrite", request_kind="tree", edits={"-": entry}))
    assert client.remote_config(CONFIG) == honest


def test_a_next_page_link_to_another_origin_is_upstream_invalid(
    client: HubClient, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpx2.Response, "links", property(_evil_links))
    with pytest.raises(UpstreamInvalid, match=r"invalid next-page link: 'http://evil\.example"):
        client.remote_config(CONFIG)


def _evil_links(_: object) -> dict[str, dict[str, str]]:
    return {"next": {"url": "http://evil.example/steal", "rel": "next"}}


@pytest.mark.parametrize("sha", ["../../x", "../" + "a" * 61, "A" * 64])
def test_a_download_refuses_a_sha256_that_would_name_a_path(
    client: HubClient, planned: RemoteConfig, hub: LocalHub, tmp_path: Path, sha: str
) -> None:
    real = planned.files[0]
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UpstreamInvalid, match="invalid sha256"):
        client.download(
            RemoteFile(real.path, real.size, sha),
            planned.commit,
            work / "mirror" / real.name,
            partial_dir=work / "deep" / "partials",
        )
    assert list(work.rglob("*")) == [], "no file nor folder made"
    assert _requests(hub) == {}

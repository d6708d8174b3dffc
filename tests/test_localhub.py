"""The local Hub, spoken to by the real `huggingface_hub` client (and raw HTTP where the client hides it)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tol_dagster.devtools.localhub import Fault, LocalHub
from tol_dagster.devtools.localhub.replies import byte_range
from tol_dagster.settings import DEFAULT_REPO_ID

REPO = DEFAULT_REPO_ID
CONFIG = "bioclip-2_float16"
CARD = f"""---
configs:
- config_name: {CONFIG}
  data_files:
  - split: train
    path: {CONFIG}/*.parquet
dataset_info:
- config_name: {CONFIG}
  splits:
  - name: train
    num_examples: 300
---
# A tiny repo for the local Hub tests
"""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_parquet(path: Path, start: int, rows: int = 100) -> None:
    pq.write_table(pa.table({"uuid": [f"u{i:05d}" for i in range(start, start + rows)]}), path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """README.md with front matter, three small parquet files, one of them with an awkward name."""
    root = tmp_path / "repo"
    (root / CONFIG).mkdir(parents=True)
    (root / "README.md").write_text(CARD)
    write_parquet(root / CONFIG / "train-00000-of-00002.parquet", 0)
    write_parquet(root / CONFIG / "train-00001-of-00002.parquet", 100)
    write_parquet(root / CONFIG / "Felis catus (été).parquet", 200)
    return root


@pytest.fixture
def hub(repo: Path) -> Iterator[LocalHub]:
    with LocalHub(repo) as running:
        yield running


@pytest.fixture
def api(hub: LocalHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint)


def download(hub: LocalHub, filename: str, **kwargs: object) -> Path:
    """hf_hub_download into a cache private to the test (a shared cache would answer from disk)."""
    cache = hub.repo.root.parent / "hf-cache"
    return Path(
        hf_hub_download(
            REPO, filename, repo_type="dataset", endpoint=hub.endpoint, cache_dir=cache, **kwargs
        )  # type: ignore[arg-type]
    )


def resolve_url(hub: LocalHub, path: str, revision: str = "main") -> str:
    return f"{hub.endpoint}/datasets/{REPO}/resolve/{revision}/{path}"


def lfs_url(hub: LocalHub, path: str) -> str:
    """The CDN URL the Hub redirects to for an LFS file."""
    response = httpx2.head(resolve_url(hub, path))
    assert response.status_code == 302
    return response.headers["Location"]


# --- metadata ----------------------------------------------------------------------------
def test_dataset_info_carries_the_commit_the_card_and_the_files_sha256(
    hub: LocalHub, api: HfApi, repo: Path
) -> None:
    info = api.dataset_info(REPO, files_metadata=True)
    assert info.sha == hub.head_commit()
    assert info.card_data is not None
    assert info.card_data["dataset_info"][0]["splits"][0]["num_examples"] == 300
    assert info.card_data["configs"][0]["config_name"] == CONFIG
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {
        p.relative_to(repo).as_posix()
        for p in repo.rglob("*")
        if p.is_file() and ".localhub" not in p.parts
    }
    readme = siblings["README.md"]
    assert readme.lfs is None and readme.size == len(CARD.encode())
    for name, sibling in siblings.items():
        if name.endswith(".parquet"):
            assert sibling.lfs is not None
            assert sibling.lfs.sha256 == sha256_of(repo / name)
            assert sibling.lfs.size == (repo / name).stat().st_size


def test_tree_lists_recursively_with_sha256_and_last_commit(
    hub: LocalHub, api: HfApi, repo: Path
) -> None:
    top = list(api.list_repo_tree(REPO, repo_type="dataset"))
    assert sorted(e.path for e in top) == ["README.md", CONFIG]
    entries = list(
        api.list_repo_tree(
            REPO, repo_type="dataset", path_in_repo=CONFIG, recursive=True, expand=True
        )
    )
    files = [e for e in entries if hasattr(e, "lfs")]
    assert len(files) == 3
    for entry in files:
        assert entry.lfs is not None and entry.lfs.sha256 == sha256_of(repo / entry.path)
        assert entry.last_commit is not None and entry.last_commit.oid == hub.head_commit()


def test_tree_pages_are_linked_by_absolute_urls(hub: LocalHub, api: HfApi, repo: Path) -> None:
    many = repo / "many"
    many.mkdir()
    for i in range(60):
        (many / f"f{i:03d}.txt").write_text(str(i))
    first = httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}/tree/main/many?expand=true")
    assert len(first.json()) == 50
    assert first.links["next"]["url"].startswith(hub.endpoint + "/api/datasets/")
    listed = list(api.list_repo_tree(REPO, repo_type="dataset", path_in_repo="many", expand=True))
    assert [e.path for e in listed] == [f"many/f{i:03d}.txt" for i in range(60)]


def test_paths_info_describes_known_paths_and_leaves_out_unknown_ones(
    api: HfApi, repo: Path
) -> None:
    name = f"{CONFIG}/train-00000-of-00002.parquet"
    infos = api.get_paths_info(REPO, [name, CONFIG, "missing.parquet"], repo_type="dataset")
    assert [i.path for i in infos] == [name, CONFIG]
    assert infos[0].lfs is not None and infos[0].lfs.sha256 == sha256_of(repo / name)  # type: ignore[union-attr]


def test_refs_name_main_at_the_head_commit(hub: LocalHub, api: HfApi) -> None:
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", hub.head_commit())]
    assert refs.converts == [] and refs.tags == []


def test_commit_history_grows_with_each_change_and_pages(
    hub: LocalHub, api: HfApi, repo: Path
) -> None:
    first = hub.head_commit()
    for i in range(55):
        (repo / "notes.txt").write_text(f"edit {i}")
        hub.head_commit()
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert len(commits) == 56
    assert commits[0].commit_id == hub.head_commit() and commits[-1].commit_id == first
    assert commits[0].title == "Update notes.txt" and commits[-2].title == "Add notes.txt"


# --- bytes -------------------------------------------------------------------------------
def test_download_gives_the_exact_bytes_of_lfs_and_regular_files(hub: LocalHub, repo: Path) -> None:
    for name in ("README.md", f"{CONFIG}/Felis catus (été).parquet"):
        assert sha256_of(download(hub, name)) == sha256_of(repo / name)
    assert hub.stats()["lfs_get"]["count"] == 1  # the README is served by the Hub origin itself


def test_lfs_files_redirect_to_a_second_origin_with_the_metadata(hub: LocalHub, repo: Path) -> None:
    name = f"{CONFIG}/train-00001-of-00002.parquet"
    response = httpx2.head(resolve_url(hub, name))
    assert response.status_code == 302
    assert response.headers["X-Repo-Commit"] == hub.head_commit()
    assert response.headers["X-Linked-Etag"] == f'"{sha256_of(repo / name)}"'
    assert int(response.headers["X-Linked-Size"]) == (repo / name).stat().st_size
    location = response.headers["Location"]
    assert location.startswith(hub.cdn_endpoint) and hub.cdn_endpoint != hub.endpoint
    readme = httpx2.head(resolve_url(hub, "README.md"))
    assert readme.status_code == 200 and readme.headers["X-Repo-Commit"] == hub.head_commit()


def test_byte_ranges_answer_206_and_416(hub: LocalHub, repo: Path) -> None:
    name = f"{CONFIG}/train-00000-of-00002.parquet"
    data = (repo / name).read_bytes()
    url = lfs_url(hub, name)
    for header, expected in (
        ("bytes=10-19", data[10:20]),
        ("bytes=100-", data[100:]),
        ("bytes=-8", data[-8:]),
    ):
        response = httpx2.get(url, headers={"Range": header})
        assert response.status_code == 206 and response.content == expected
        assert response.headers["Content-Range"].endswith(f"/{len(data)}")
    assert httpx2.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    readme = httpx2.get(resolve_url(hub, "README.md"), headers={"Range": "bytes=0-2"})
    assert readme.status_code == 206 and readme.content == b"---"
    assert hub.stats()["range_requests"] == {"count": 5, "bytes": 10 + len(data) - 100 + 8 + 3}


def test_byte_range_parsing_follows_rfc_9110() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-", 10) == (2, 8)
    assert byte_range("bytes=2-100", 10) == (2, 8)
    assert byte_range("bytes=-3", 10) == (7, 3)
    assert byte_range("bytes=-30", 10) == (0, 10)
    assert byte_range("bytes=0-1,4-5", 10) is None  # multi-range: whole body
    for bad in ("bytes=10-", "bytes=-0"):
        with pytest.raises(Exception, match="outside the file"):
            byte_range(bad, 10)


# --- commits follow content --------------------------------------------------------------
def test_sha_changes_on_edit_add_and_delete_but_not_on_restart(repo: Path) -> None:
    with LocalHub(repo) as hub:
        start = HfApi(endpoint=hub.endpoint).dataset_info(REPO).sha
    with LocalHub(repo) as hub:
        api = HfApi(endpoint=hub.endpoint)
        assert api.dataset_info(REPO).sha == start
        write_parquet(repo / CONFIG / "train-00000-of-00002.parquet", 1000)
        edited = api.dataset_info(REPO).sha
        write_parquet(repo / CONFIG / "train-00002-of-00002.parquet", 2000)
        added = api.dataset_info(REPO).sha
        (repo / CONFIG / "train-00002-of-00002.parquet").unlink()
        deleted = api.dataset_info(REPO).sha
    assert len({start, edited, added, deleted}) == 4
    with pytest.raises(
        httpx2.ConnectError
    ):  # a stopped hub answers nothing, even on kept-alive connections
        api.dataset_info(REPO)


def test_a_rewrite_that_keeps_size_and_mtime_is_still_a_change(hub: LocalHub, repo: Path) -> None:
    """Coarse file-system clocks can give a quick same-size rewrite the same mtime (racy git)."""
    readme = repo / "README.md"
    mtime_ns = time.time_ns() + 10**10  # a stamp no later hash can be 100 ms past
    readme.write_text(CARD.replace("300", "301"))
    os.utime(readme, ns=(mtime_ns, mtime_ns))
    before = hub.head_commit()
    readme.write_text(CARD.replace("300", "302"))
    os.utime(readme, ns=(mtime_ns, mtime_ns))
    assert hub.head_commit() != before


def test_older_commits_serve_files_that_still_exist(hub: LocalHub, repo: Path) -> None:
    old = hub.head_commit()
    unchanged = f"{CONFIG}/train-00001-of-00002.parquet"
    edited = f"{CONFIG}/train-00000-of-00002.parquet"
    write_parquet(repo / edited, 5000)
    (repo / "README.md").write_text(CARD.replace("300", "301"))
    assert hub.head_commit() != old
    assert sha256_of(download(hub, unchanged, revision=old)) == sha256_of(repo / unchanged)
    assert download(hub, "README.md", revision=old).read_text() == CARD  # kept in the hidden folder
    assert (
        HfApi(endpoint=hub.endpoint)
        .dataset_info(REPO, revision=old)
        .card_data["dataset_info"][0]["splits"][0]["num_examples"]
        == 300
    )  # type: ignore[index]
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, edited, revision=old)


def test_the_state_folder_is_never_listed_or_served(hub: LocalHub, api: HfApi, repo: Path) -> None:
    assert (repo / ".localhub").is_dir()
    assert not [
        e
        for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)
        if ".localhub" in e.path
    ]
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, ".localhub/secret")


def test_force_push_makes_old_commits_unresolvable(hub: LocalHub, api: HfApi) -> None:
    old = hub.head_commit()
    new = hub.force_push()
    assert new != old and hub.head_commit() == new
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision=old)
    assert [c.commit_id for c in api.list_repo_commits(REPO, repo_type="dataset")] == [new]


# --- errors ------------------------------------------------------------------------------
def test_error_codes_map_to_the_clients_exceptions(hub: LocalHub, api: HfApi) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("someone/else")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("someone/else", "README.md", repo_type="dataset", endpoint=hub.endpoint)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_tree(REPO, repo_type="dataset", revision="0" * 40).__next__()
    with pytest.raises(RevisionNotFoundError):
        download(hub, "README.md", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, f"{CONFIG}/missing.parquet")
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, repo_type="dataset", path_in_repo="missing"))


def test_a_required_token_gates_the_repo(repo: Path) -> None:
    with LocalHub(repo, token="hf_secret") as hub:
        with pytest.raises(GatedRepoError):
            HfApi(endpoint=hub.endpoint).dataset_info(REPO)
        with pytest.raises(GatedRepoError):
            HfApi(endpoint=hub.endpoint, token="hf_wrong").dataset_info(REPO)
        with pytest.raises(GatedRepoError):
            download(hub, "README.md")
        info = HfApi(endpoint=hub.endpoint, token="hf_secret").dataset_info(REPO)
        assert info.gated == "manual" and info.sha == hub.head_commit()
        name = f"{CONFIG}/train-00000-of-00002.parquet"
        assert sha256_of(download(hub, name, token="hf_secret")) == sha256_of(repo / name)
        assert httpx2.get(f"{hub.endpoint}/_admin/stats").status_code == 200  # admin needs no token
        forged = lfs_url_with_token(hub, name).replace("sig=", "sig=0")
        assert httpx2.get(forged).status_code == 403


def lfs_url_with_token(hub: LocalHub, path: str) -> str:
    response = httpx2.head(resolve_url(hub, path), headers={"Authorization": "Bearer hf_secret"})
    return response.headers["Location"]


# --- faults ------------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after_and_the_client_retries(
    hub: LocalHub, api: HfApi
) -> None:
    hub.add_fault(Fault("rate_limit", request_kind="info", retry_after=7, times=1))
    response = httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}").status_code == 200  # times=1 used up
    hub.add_fault(Fault("rate_limit", pattern="/api/datasets/*/tree/*", retry_after=0, times=1))
    assert list(api.list_repo_tree(REPO, repo_type="dataset"))  # listings retry after Retry-After
    assert hub.stats()["tree"]["count"] == 2


def test_status_fault_answers_a_server_error(hub: LocalHub, api: HfApi) -> None:
    hub.add_fault(Fault("status", status=503, request_kind="info"))
    with pytest.raises(HfHubHTTPError) as caught:
        api.dataset_info(REPO)
    assert caught.value.response.status_code == 503
    hub.clear_faults()
    assert api.dataset_info(REPO).sha == hub.head_commit()


def test_cut_body_closes_mid_file_and_the_client_retries(hub: LocalHub, repo: Path) -> None:
    name = f"{CONFIG}/train-00001-of-00002.parquet"
    hub.add_fault(Fault("cut", request_kind="lfs_get", after_bytes=100, times=1))
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(lfs_url(hub, name))
    hub.add_fault(Fault("cut", request_kind="lfs_get", after_bytes=100, times=1))
    assert sha256_of(download(hub, name)) == sha256_of(repo / name)
    stats = hub.stats()
    # cut, cut, then whole: the client resumes from its last complete 10 MiB chunk (here: 0)
    assert stats["lfs_get"]["count"] == 3
    assert stats["lfs_get"]["bytes"] == 2 * 100 + (repo / name).stat().st_size


def test_stall_fault_sends_part_of_the_body_then_nothing(hub: LocalHub, repo: Path) -> None:
    name = f"{CONFIG}/train-00001-of-00002.parquet"
    hub.add_fault(Fault("stall", request_kind="lfs_get", after_bytes=100, delay_s=60, times=1))
    received = bytearray()
    started = time.monotonic()
    with (
        pytest.raises(httpx2.ReadTimeout),
        httpx2.stream("GET", lfs_url(hub, name), timeout=1.0) as response,
    ):
        for chunk in response.iter_bytes():
            received += chunk
    assert len(received) == 100 and 1.0 <= time.monotonic() - started < 5.0


def test_rewrite_fault_edits_the_json_answer(hub: LocalHub, api: HfApi) -> None:
    hub.add_fault(Fault("rewrite", request_kind="info", edits={"sha": "x", "tags.-": "t"}))
    assert (api.dataset_info(REPO).sha, api.dataset_info(REPO).tags) == ("x", ["t"])
    hub.clear_faults()
    hub.add_fault(Fault("rewrite", request_kind="info", edits={"no.such.key": 1}, times=1))
    response = httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}")
    assert response.status_code == 500 and "does not fit" in response.text
    with pytest.raises(ValueError, match="needs edits"):
        Fault("rewrite")


def test_delay_fault_holds_the_answer(hub: LocalHub) -> None:
    hub.add_fault(Fault("delay", delay_s=0.3, request_kind="refs", times=1))
    started = time.monotonic()
    assert httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}/refs").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_bandwidth_fault_caps_the_transfer_rate(hub: LocalHub, repo: Path) -> None:
    (repo / "big.parquet").write_bytes(os.urandom(2_000_000))
    url = lfs_url(hub, "big.parquet")
    hub.add_fault(Fault("bandwidth", bytes_per_s=8_000_000, request_kind="lfs_get"))
    started = time.monotonic()
    assert len(httpx2.get(url).content) == 2_000_000
    elapsed = time.monotonic() - started
    # The cap is the lower bound; the upper one only says the transfer was not stalled (a loaded
    # 2-core machine stretches any wall time, so no tight bound above).
    assert 0.23 <= elapsed <= 5.0, f"2 MB at 8 MB/s took {elapsed:.2f} s"


def test_stats_count_requests_and_body_bytes_by_kind(hub: LocalHub, api: HfApi, repo: Path) -> None:
    hub.reset()
    api.dataset_info(REPO)
    api.list_repo_refs(REPO, repo_type="dataset")
    api.get_paths_info(REPO, ["README.md"], repo_type="dataset")
    download(hub, f"{CONFIG}/train-00000-of-00002.parquet")
    stats = hub.stats()
    assert {k: v["count"] for k, v in stats.items() if v["count"]} == {
        "info": 1,
        "refs": 1,
        "paths_info": 1,
        "resolve_head": 1,
        "lfs_get": 1,
    }
    assert (
        stats["lfs_get"]["bytes"] == (repo / CONFIG / "train-00000-of-00002.parquet").stat().st_size
    )
    hub.reset()
    assert all(v == {"count": 0, "bytes": 0} for v in hub.stats().values())


def test_admin_http_api_adds_faults_resets_and_force_pushes(hub: LocalHub) -> None:
    admin = f"{hub.endpoint}/_admin"
    added = httpx2.post(
        f"{admin}/faults",
        json=[{"kind": "status", "status": 500, "request_kind": "refs", "times": 2}],
    )
    assert added.json() == {"added": 1}
    assert httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}/refs").status_code == 500
    assert httpx2.get(f"{admin}/stats").json()["refs"]["count"] == 1
    assert httpx2.post(f"{admin}/faults", json={"kind": "nope"}).status_code == 400
    assert httpx2.post(f"{admin}/reset").status_code == 200
    assert (
        httpx2.get(f"{hub.endpoint}/api/datasets/{REPO}/refs").status_code == 200
    )  # the fault is gone
    old = hub.head_commit()
    assert httpx2.post(f"{admin}/force-push").json()["head"] == hub.head_commit() != old


# --- as a process ------------------------------------------------------------------------
def test_serve_forever_prints_the_endpoint_first_and_stops_on_sigterm(repo: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "tol_dagster.devtools.localhub",
        str(repo),
        "--repo-id",
        "a/b",
        "--token",
        "t",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("endpoint=http://127.0.0.1:")
        endpoint = first.removeprefix("endpoint=")
        with pytest.raises(GatedRepoError):
            HfApi(endpoint=endpoint).dataset_info("a/b")
        assert HfApi(endpoint=endpoint, token="t").dataset_info("a/b").id == "a/b"
        assert httpx2.get(f"{endpoint}/_admin/stats").json()["info"]["count"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0 and err == ""  # no per-request noise


# --- the shared sample -------------------------------------------------------------------
def test_serves_the_generated_sample_with_its_card_and_hashes(
    local_hub: LocalHub, hub_root: Path
) -> None:
    from tol_dagster.hub.card import parse_card

    api = HfApi(endpoint=local_hub.endpoint)
    info = api.dataset_info(REPO)
    assert info.card_data is not None
    served = info.card_data.to_dict()
    front = parse_card((hub_root / "README.md").read_text())
    assert front["dataset_info"] and {k: served.get(k) for k in front} == front
    files = sorted((hub_root / CONFIG).glob("*.parquet"))
    tree = list(api.list_repo_tree(REPO, repo_type="dataset", path_in_repo=CONFIG, recursive=True))
    assert [e.path for e in tree] == [f.relative_to(hub_root).as_posix() for f in files]
    for entry in tree:
        assert entry.lfs is not None and entry.lfs.sha256 == sha256_of(hub_root / entry.path)  # type: ignore[union-attr]

"""Hub access: the upstream commit, a config's files with their sha256, and verified downloads.

Everything goes through `huggingface_hub` (its session, headers, URLs, error mapping, wire
objects and Xet path) but not through `hf_hub_download`, because that call keeps stale files
when the Hub is down, never checks sha256 and never resumes across processes (see HUB.md).
What the client leaves uneven, this module makes uniform:

- one retry loop for every request (backoff, `Retry-After`, `RateLimit: ...;r=0;t=N`), and no
  retries inside the client, so a request is never retried twice over nor counted twice;
- bounded waits: a server's wait is capped (`TOL_MAX_RETRY_WAIT_S`) and 429s have a budget of
  their own, a download that receives no bytes for `TOL_STALL_TIMEOUT_S` fails, and a client
  may have an overall deadline (`TOL_SYNC_DEADLINE_S`);
- an explicit timeout on every request;
- every value of the Hub's answers (paths, sha256, sizes, commit ids) checked where it enters
  (`hub_input`), before any use in a path;
- downloads into a stable `<sha256>.part` that the next attempt or process resumes with a
  Range request, hashed while streaming, verified for size and sha256, then renamed atomically;
- the token goes only to the Hub's own origin, and never into a message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.hf_api import DatasetInfo
from huggingface_hub.utils import get_session, hf_raise_for_status

from tol_dagster import __version__
from tol_dagster.errors import SettingsError, UpstreamError
from tol_dagster.hub import failures
from tol_dagster.hub.card import expected_rows
from tol_dagster.hub.download import Downloader
from tol_dagster.hub.origin import LIBRARY, origin, request_headers
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.hub.retry import Retrier, RetryPolicy
from tol_dagster.hub.untrusted import (
    check_commit,
    check_file_name,
    check_repo_path,
    check_rows,
    check_sha256,
    check_size,
    invalid,
)

logger = logging.getLogger("tol_dagster.hub.client")

#: A client's policy unless it is given one (frozen: one instance serves every client).
DEFAULT_RETRY = RetryPolicy()


class HubClient:
    """Read-only access to one dataset repo on one Hub endpoint. Safe to share between threads."""

    def __init__(
        self,
        endpoint: str,
        repo_id: str,
        token: str | None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        started: float | None = None,
    ) -> None:
        """`started` (epoch seconds, default now) is when the deadline's clock started: the
        run's start, so that every step of one sync shares one deadline."""
        self.endpoint = endpoint.rstrip("/")
        self.repo_id = repo_id
        self.retry = retry
        # False, not None: the client would otherwise pick up a saved token on its own.
        self._token: str | bool = token or False
        self._api = HfApi(
            endpoint=self.endpoint,
            token=self._token,
            library_name=LIBRARY,
            library_version=__version__,
        )
        self._retrier = Retrier(retry, self.endpoint, repo_id, started=started)
        self._downloader = Downloader(self.endpoint, repo_id, self._token, self._retrier)

    def __repr__(self) -> str:
        return f"HubClient({self.endpoint!r}, {self.repo_id!r}, token={'set' if self._token else 'none'})"

    # -- metadata ---------------------------------------------------------------------------

    def head_commit(self, revision: str = "main") -> str:
        """The commit `revision` points at: one request while the Hub answers."""
        return self._commit_of(self._info(revision, expand=["sha"]), revision)

    def card(self, commit: str) -> dict[str, Any]:
        """The dataset card's YAML metadata at `commit` ({} when the card has none)."""
        card = self._info(commit, expand=["sha", "cardData"]).card_data
        return card.to_dict() if card is not None else {}

    def remote_config(self, config: str, commit: str | None = None) -> RemoteConfig:
        """`config`'s parquet files at `commit` (default: the head of main) and the card's count.

        Two requests: dataset_info (commit and card) and one recursive tree listing of the
        config's folder, pinned to that commit so files and card belong to the same state.
        """
        info = self._info(commit or "main", expand=["sha", "cardData"])
        sha = self._commit_of(info, commit or "main")
        files = tuple(sorted(self._parquet_files(config, sha), key=lambda f: f.path))
        card = info.card_data.to_dict() if info.card_data is not None else {}
        where = f"the card's train rows of {config} in {self.repo_id}@{sha[:12]}"
        try:
            rows = expected_rows(card, config)
        except (TypeError, ValueError, AttributeError) as err:
            raise invalid("row count", str(err), where) from err
        return RemoteConfig(self.repo_id, config, sha, files, check_rows(rows, where))

    def _commit_of(self, info: DatasetInfo, revision: str) -> str:
        if not info.sha:
            raise UpstreamError(
                f"{self.endpoint} answered dataset_info for {self.repo_id} without a commit sha"
            )
        return check_commit(info.sha, f"dataset_info of {self.repo_id}@{revision}")

    def _info(self, revision: str, *, expand: list[Any]) -> DatasetInfo:
        return self._retrier.run(
            f"dataset_info of {self.repo_id}@{revision}",
            lambda: self._api.dataset_info(
                self.repo_id, revision=revision, expand=expand, timeout=self._retrier.timeout()
            ),
        )

    def _parquet_files(self, config: str, commit: str) -> Iterator[RemoteFile]:
        """The parquet files directly in `config/`, from the tree listing's pages."""
        url: str | None = (
            f"{self.endpoint}/api/datasets/{self.repo_id}/tree/"
            f"{quote(commit, safe='')}/{quote(config, safe='')}"
        )
        params: dict[str, Any] | None = {"recursive": True, "expand": False}
        seen: set[str] = set()
        while url is not None:
            try:
                response = self._get_page(f"tree of {config}/ at {commit[:12]}", url, params)
            except failures.EntryMissing as err:
                raise SettingsError(
                    f"{self.repo_id} has no folder {config!r} at commit {commit[:12]} on "
                    f"{self.endpoint}: check the config name (TOL_CONFIGS) against the repo's folders"
                ) from err
            where = f"tree of {config}/ in {self.repo_id}@{commit[:12]}"
            for entry in _json_list(response, where):
                file = self._tree_file(entry, config, commit)
                if file is None:
                    continue
                if file.path in seen:
                    raise invalid("tree listing", file.path, f"listed twice; {where}")
                seen.add(file.path)
                yield file
            url, params = self._next_page(response, where), None

    def _tree_file(self, entry: object, config: str, commit: str) -> RemoteFile | None:
        """The parquet file a tree entry announces directly in `config/`, checked; None for
        anything else (folders, other files, entries outside the folder: never removals)."""
        where = f"tree of {config}/ in {self.repo_id}@{commit[:12]}"
        if not isinstance(entry, dict):
            raise invalid("tree entry", entry, where)
        path = check_repo_path(entry.get("path"), where)
        if entry.get("type") != "file":
            return None
        if path.parent != PurePosixPath(config) or path.suffix != ".parquet":
            return None
        check_file_name(path, where)
        where = f"{path} in {self.repo_id}@{commit[:12]}"
        lfs = entry.get("lfs")
        if lfs is None:
            raise UpstreamError(
                f"{path} at commit {commit[:12]} is not an LFS file, "
                "so the Hub gives no sha256 for it"
            )
        if not isinstance(lfs, dict):
            raise invalid("LFS record", lfs, where)
        size = check_size(lfs.get("size"), where)
        return RemoteFile(str(path), size, check_sha256(lfs.get("oid"), where))

    def _next_page(self, response: httpx2.Response, where: str) -> str | None:
        """The listing's next page, which must stay on the Hub's origin (it gets the token)."""
        link = response.links.get("next", {}).get("url")
        if link is None:
            return None
        url = urljoin(str(response.url), link)
        if origin(url) != origin(self.endpoint):
            raise invalid("next-page link", link, f"not on {self.endpoint}; {where}")
        return url

    def _get_page(self, what: str, url: str, params: dict[str, Any] | None) -> httpx2.Response:
        """One page of a listing. Not `HfApi.list_repo_tree`: its pager retries on a schedule of
        its own (so retries would multiply) and sets no timeout."""

        def get() -> httpx2.Response:
            response = get_session().get(
                url,
                params=params,
                headers=request_headers(self._token, to_hub=True),
                timeout=self._retrier.timeout(),
            )
            hf_raise_for_status(response)
            return response

        return self._retrier.run(what, get)

    # -- download ---------------------------------------------------------------------------

    def download(
        self,
        file: RemoteFile,
        commit: str,
        dest: Path,
        *,
        partial_dir: Path,
        on_progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Fetch `file` as of `commit` into `dest`, verified for size and sha256.

        Bytes go to `partial_dir/<sha256>.part`, which a later attempt or process resumes with
        a Range request. `on_progress` receives the byte count of each chunk fetched from the
        network. On a mismatch the partial is deleted and `IntegrityError` names the file, the
        expected and the actual sha256; `dest` is then left untouched. A sha256 or size that is
        not one (`UpstreamInvalid`) is refused before it names any file.
        """
        return self._downloader.download(
            file, commit, dest, partial_dir=partial_dir, on_progress=on_progress
        )


def _json_list(response: httpx2.Response, where: str) -> list[Any]:
    """A listing page's JSON, which must be a list."""
    try:
        data = response.json()
    except ValueError:
        raise invalid("listing (not JSON)", response.text[:200], where) from None
    if not isinstance(data, list):
        raise invalid("listing (not a list)", data, where)
    return data

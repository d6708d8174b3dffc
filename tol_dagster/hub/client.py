"""The Hub client: the upstream commit, the card, a config's files with their sha256, downloads.

Everything goes through `huggingface_hub` (its session, headers, URLs, error mapping, wire
objects and Xet path) but not through `hf_hub_download`, which keeps a stale local file when the
Hub is down, never checks the sha256 and never resumes across processes. What the client leaves
uneven, `HubClient` makes uniform by composing one module per job:

- `retry`: one retry loop for every request, none inside huggingface_hub; bounded waits (the
  server's wait capped by `TOL_MAX_RETRY_WAIT_S`, a 429 budget of its own, `TOL_STALL_TIMEOUT_S`,
  `TOL_SYNC_DEADLINE_S`) and an explicit timeout on every request;
- `failures`: which failures are worth another attempt, and the `UpstreamError` for the others;
- `tree` and `untrusted`: every value of the Hub's answers (paths, sha256, sizes, commit ids)
  checked where it enters, before any use in a path;
- `download` and `partial`: a stable `<sha256>.part` that the next attempt or process resumes,
  hashed while streaming, verified for size and sha256, then renamed atomically;
- `origin`: the token goes only to the Hub's own origin, and never into a message or a log line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.hf_api import DatasetInfo
from huggingface_hub.utils import get_session, hf_raise_for_status

from tol_dagster import __version__
from tol_dagster.errors import SettingsError, UpstreamError
from tol_dagster.hub import failures, tree
from tol_dagster.hub.card import expected_rows
from tol_dagster.hub.download import Downloader
from tol_dagster.hub.origin import LIBRARY, request_headers
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.hub.retry import Retrier, RetryPolicy
from tol_dagster.hub.untrusted import check_commit, check_rows, invalid

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
        what = f"dataset_info of {self.repo_id}@{revision}"
        try:
            return self._retrier.run(
                what,
                lambda: self._api.dataset_info(
                    self.repo_id, revision=revision, expand=expand, timeout=self._retrier.timeout()
                ),
            )
        except (TypeError, AttributeError, KeyError) as err:  # the client's DatasetInfo(**body)
            raise invalid("dataset info (not a JSON object of one)", str(err), what) from err

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
            for entry in tree.page_entries(response, where):
                file = tree.parquet_file(entry, config, self.repo_id, commit)
                if file is None:
                    continue
                if file.path in seen:
                    raise invalid("tree listing", file.path, f"listed twice; {where}")
                seen.add(file.path)
                yield file
            url, params = tree.next_page(response, self.endpoint, where), None

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
        return self._downloader.download(file, commit, dest, partial_dir, on_progress or _ignore)


def _ignore(_: int) -> None:
    return None

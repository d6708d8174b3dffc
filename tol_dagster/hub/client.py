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

import hashlib
import importlib.util
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urljoin, urlparse

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    FileMetadataError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import HfFileMetadata, get_hf_file_metadata, hf_hub_url, xet_get
from huggingface_hub.hf_api import DatasetInfo
from huggingface_hub.utils import (
    build_hf_headers,
    get_session,
    hf_raise_for_status,
    parse_ratelimit_headers,
)

from tol_dagster import __version__
from tol_dagster.errors import (
    IntegrityError,
    RevisionGone,
    SettingsError,
    UpstreamAuthError,
    UpstreamError,
)
from tol_dagster.hub.card import expected_rows
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
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

T = TypeVar("T")

#: Statuses worth another try: timeouts, rate limits, server errors.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Reads of the partial when its hash must be rebuilt.
CHUNK_BYTES = 8 * 1024 * 1024
_LIBRARY = "tol-dagster"
#: What the Hub's side can raise besides transient failures; anything else is not mapped.
_HUB_FAILURES = (
    HfHubHTTPError,
    httpx2.HTTPError,
    OfflineModeIsEnabled,
    FileMetadataError,
    json.JSONDecodeError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: total attempts per request, exponential backoff, per-request timeout.

    A wait the server asks for (`Retry-After`, `RateLimit` with r=0) replaces the backoff delay,
    capped at `max_server_wait_s`, so one answer cannot stall a sync for a day. Rate limiting
    (429) is counted against `rate_limit_attempts`, apart from `attempts`: a busy Hub must not
    use up the retries meant for a failing one. A download that receives no bytes for
    `stall_timeout_s` fails; `deadline_s` (None: none) bounds what one client does, counted
    from its `started` time (the run's start).
    """

    attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 60.0
    max_server_wait_s: float = 300.0
    rate_limit_attempts: int = 10
    stall_timeout_s: float = 120.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if (
            self.attempts < 1
            or self.rate_limit_attempts < 1
            or self.base_delay_s < 0
            or self.max_delay_s < 0
            or self.max_server_wait_s < 0
            or self.timeout_s <= 0
            or self.stall_timeout_s <= 0
            or (self.deadline_s is not None and self.deadline_s <= 0)
        ):
            raise SettingsError(
                f"{self} is not a usable retry policy: attempts >= 1, delays >= 0, "
                "timeouts and deadline > 0"
            )

    def backoff(self, failures: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failures - 1))


class _Transient(Exception):
    """A failure of our own detection (short body, Range ignored, Xet failed) worth a retry."""


class HubClient:
    """Read-only access to one dataset repo on one Hub endpoint. Safe to share between threads."""

    def __init__(
        self,
        endpoint: str,
        repo_id: str,
        token: str | None,
        *,
        retry: RetryPolicy = RetryPolicy(),
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
            library_name=_LIBRARY,
            library_version=__version__,
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._deadline: float | None = None
        if retry.deadline_s is not None:
            spent = max(0.0, time.time() - started) if started is not None else 0.0
            self._deadline = time.monotonic() + retry.deadline_s - spent

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
        return self._with_retries(
            f"dataset_info of {self.repo_id}@{revision}",
            lambda: self._api.dataset_info(
                self.repo_id, revision=revision, expand=expand, timeout=self._timeout()
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
            except _EntryMissing as err:
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
        if _origin(url) != _origin(self.endpoint):
            raise invalid("next-page link", link, f"not on {self.endpoint}; {where}")
        return url

    def _get_page(self, what: str, url: str, params: dict[str, Any] | None) -> httpx2.Response:
        """One page of a listing. Not `HfApi.list_repo_tree`: its pager retries on a schedule of
        its own (so retries would multiply) and sets no timeout."""

        def get() -> httpx2.Response:
            response = get_session().get(
                url, params=params, headers=self._headers(to_hub=True), timeout=self._timeout()
            )
            hf_raise_for_status(response)
            return response

        return self._with_retries(what, get)

    def _headers(self, *, to_hub: bool) -> dict[str, str]:
        """The client's headers; the token only when the request goes to the Hub's own origin."""
        return build_hf_headers(
            token=self._token if to_hub else False,
            library_name=_LIBRARY,
            library_version=__version__,
        )

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
        where = f"{file.path} in {self.repo_id}@{commit[:12]}"
        check_sha256(file.sha256, where)
        check_size(file.size, where)
        partial_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive(file.sha256), _Partial(partial_dir / f"{file.sha256}.part") as partial:
            resumed = partial.size > 0
            self._fetch(file, commit, partial, on_progress or _ignore)
            if resumed and not partial.matches(file):
                logger.warning(
                    "%s: the resumed partial does not verify; fetching it again from byte 0",
                    file.path,
                )
                partial.reset()
                self._fetch(file, commit, partial, on_progress or _ignore)
            if not partial.matches(file):
                actual_size, actual_sha = partial.size, partial.sha256
                partial.delete()
                raise IntegrityError(
                    f"{file.path} at commit {commit[:12]}: expected sha256 {file.sha256} ({file.size} bytes), "
                    f"got {actual_sha} ({actual_size} bytes); the partial was deleted. The file changed "
                    "upstream or was corrupted in transit: re-plan against the Hub and sync again"
                )
            partial.publish(dest)
        return dest

    def _fetch(
        self, file: RemoteFile, commit: str, partial: _Partial, on_progress: Callable[[int], None]
    ) -> None:
        """Bring `partial` to the file's full size, retrying and resuming as needed."""
        if partial.size > file.size:
            partial.reset()
        if partial.size == file.size:
            return  # complete already (a crash before the rename): only verification is left
        if partial.size:
            logger.info("%s: resuming from byte %d of %d", file.path, partial.size, file.size)
        url = hf_hub_url(
            self.repo_id, file.path, repo_type="dataset", revision=commit, endpoint=self.endpoint
        )
        use_xet = _xet_enabled()
        activity = _Activity()
        what = f"download of {file.path} at {commit[:12]}"

        def received(count: int) -> None:
            activity.touch()
            on_progress(count)
            self._check_deadline(what)

        def attempt() -> None:
            nonlocal use_xet
            meta = get_hf_file_metadata(
                url,
                token=self._token,
                timeout=min(self._timeout(), self.retry.stall_timeout_s),
                endpoint=self.endpoint,
                retry_on_errors=False,
                library_name=_LIBRARY,
                library_version=__version__,
            )
            if use_xet and meta.xet_file_data is not None:
                try:
                    self._fetch_xet(file, meta, partial, received)
                    return
                except HfHubHTTPError:
                    raise
                except Exception as err:
                    use_xet = False
                    raise _Transient(
                        f"Xet download failed ({type(err).__name__}); falling back to HTTP"
                    ) from err
            self._fetch_http(file, urljoin(url, meta.location), partial, received)

        try:
            self._with_retries(what, attempt, progress=lambda: partial.size, activity=activity)
        except _EntryMissing as err:
            raise RevisionGone(
                f"{file.path} is no longer served at commit {commit[:12]} by {self.endpoint} "
                "(history rewritten or the file purged upstream); re-plan against the new head"
            ) from err

    def _fetch_xet(
        self,
        file: RemoteFile,
        meta: HfFileMetadata,
        partial: _Partial,
        on_progress: Callable[[int], None],
    ) -> None:
        """The client's Xet path; it rewrites the whole file, so the hash is taken afterwards."""
        assert meta.xet_file_data is not None
        partial.close()
        xet_get(
            incomplete_path=partial.path,
            xet_file_data=meta.xet_file_data,
            headers=self._headers(to_hub=True),
            expected_size=file.size,
            displayed_filename=file.name,
        )
        partial.rehash()
        on_progress(partial.size)

    def _fetch_http(
        self, file: RemoteFile, location: str, partial: _Partial, on_progress: Callable[[int], None]
    ) -> None:
        """One GET from the partial's current size; raises `_Transient` if the body ends early."""
        same_origin = _origin(location) == _origin(self.endpoint)
        headers = self._headers(to_hub=same_origin)
        headers["Accept-Encoding"] = "identity"
        start = partial.size
        if start:
            headers["Range"] = f"bytes={start}-"
        # A read waits at most the stall timeout: a body that stops is noticed in time.
        limit = self._timeout()
        timeout = httpx2.Timeout(limit, read=min(limit, self.retry.stall_timeout_s))
        with get_session().stream("GET", location, headers=headers, timeout=timeout) as response:
            if response.status_code == 416:
                partial.reset()
                raise _Transient(
                    f"range from byte {start} not satisfiable; starting again from byte 0"
                )
            hf_raise_for_status(response)
            total = _announced_total(response)
            if start and response.status_code == 206 and _range_start(response) != start:
                partial.reset()
                raise _Transient(
                    f"asked for bytes from {start}, got {response.headers.get('Content-Range')}"
                )
            if start and response.status_code != 206:
                logger.warning(
                    "%s: the server ignored the Range request; starting again from byte 0",
                    file.path,
                )
                partial.reset()
            # As the network delivers: a chunk size would buffer bytes a cut connection then loses.
            for chunk in response.iter_bytes():
                partial.write(chunk)
                on_progress(len(chunk))
        partial.flush()
        expected = total if total is not None else file.size
        if partial.size < expected:
            raise _Transient(f"body ended at byte {partial.size} of {expected}")

    @contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        """Two threads never write the same partial."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # -- retries and error mapping ----------------------------------------------------------

    def _with_retries(
        self,
        what: str,
        call: Callable[[], T],
        *,
        progress: Callable[[], int] | None = None,
        activity: _Activity | None = None,
    ) -> T:
        """Run `call` until it succeeds, retrying transient failures per the policy.

        With `progress`, an attempt that moved it forward does not count against the policy: a
        download cut again and again keeps going while bytes keep arriving. With `activity`, a
        failure after `stall_timeout_s` without a byte ends the download instead.
        """
        failures = limited = 0
        tried: list[str] = []
        while True:
            self._check_deadline(what)
            before = progress() if progress else 0
            try:
                return call()
            except Exception as err:
                transient = _transient(err, self.endpoint)
                if transient is None:
                    if not isinstance(err, _HUB_FAILURES):
                        raise  # ours, or local (a full disk is no upstream error)
                    raise self._mapped(what, err) from err
                reason, asked = transient
                tried.append(reason)
                if progress and progress() > before:
                    failures = limited = 0
                if activity is not None:
                    self._check_stall(what, activity)
                if _status(err) == 429:
                    limited += 1
                    if limited >= self.retry.rate_limit_attempts:
                        raise self._rate_limited(what, limited, asked) from err
                    count, budget = limited, self.retry.rate_limit_attempts
                else:
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise UpstreamError(
                            f"{what} on {self.endpoint} failed after {len(tried)} attempts "
                            f"({', '.join(tried[-self.retry.attempts :])}): check the network and "
                            "the Hub's status, then sync again"
                        ) from err
                    count, budget = failures, self.retry.attempts
                wait = self._wait(what, asked, count)
                logger.warning(
                    "%s: %s; retry %d of %d in %.2f s%s",
                    what,
                    reason,
                    count,
                    budget - 1,
                    wait,
                    " (as the server asked)" if asked is not None else "",
                )
                time.sleep(wait)
                if activity is not None:
                    activity.touch()  # our pause between attempts is not the server stalling

    def _wait(self, what: str, asked: float | None, count: int) -> float:
        """The pause before the next attempt: the server's wait capped, else the backoff; never
        past the deadline."""
        if asked is None:
            wait = self.retry.backoff(count)
        else:
            wait = min(asked, self.retry.max_server_wait_s)
            if wait < asked:
                logger.warning(
                    "%s: the server asked to wait %.0f s; waiting %.0f s (TOL_MAX_RETRY_WAIT_S)",
                    what,
                    asked,
                    wait,
                )
        if self._deadline is not None and time.monotonic() + wait > self._deadline:
            raise self._past_deadline(what, f"the next retry is {wait:.0f} s away")
        return wait

    def _rate_limited(self, what: str, times: int, asked: float | None) -> UpstreamError:
        told = f"; it last asked to wait {asked:.0f} s" if asked is not None else ""
        return UpstreamError(
            f"{what}: {self.endpoint} rate-limited us (HTTP 429) {times} times in a row{told}, "
            f"each wait capped at {self.retry.max_server_wait_s:.0f} s (TOL_MAX_RETRY_WAIT_S): "
            "wait for the Hub's quota to reset and sync again, or raise TOL_MAX_RETRY_WAIT_S"
        )

    def _check_stall(self, what: str, activity: _Activity) -> None:
        """Fail a download that has received nothing for the stall timeout (a small margin
        allows for the read timeout firing a hair early)."""
        idle = time.monotonic() - activity.last
        if idle + 0.05 >= self.retry.stall_timeout_s:
            raise UpstreamError(
                f"{what}: stalled, no bytes received from {self.endpoint} for {idle:.0f} s "
                f"(TOL_STALL_TIMEOUT_S={self.retry.stall_timeout_s:g}): check the network and the "
                "Hub's status, then sync again (the download resumes), or raise TOL_STALL_TIMEOUT_S"
            )

    def _check_deadline(self, what: str) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise self._past_deadline(what, "")

    def _past_deadline(self, what: str, detail: str) -> UpstreamError:
        detail = f" ({detail})" if detail else ""
        return UpstreamError(
            f"{what}: the sync's deadline of {self.retry.deadline_s:g} s (TOL_SYNC_DEADLINE_S) "
            f"has passed{detail}; sync again (downloads resume), or raise or unset "
            "TOL_SYNC_DEADLINE_S"
        )

    def _timeout(self) -> float:
        """The per-request timeout, shortened so no request outlives the deadline."""
        if self._deadline is None:
            return self.retry.timeout_s
        return max(0.001, min(self.retry.timeout_s, self._deadline - time.monotonic()))

    def _mapped(self, what: str, err: Exception) -> UpstreamError:
        """Our error for a failure retrying cannot fix."""
        status = _status(err)
        if isinstance(err, RevisionNotFoundError):
            return RevisionGone(
                f"{what}: the revision no longer exists on {self.endpoint} (force-push or squash upstream); "
                "re-plan against the new head"
            )
        if isinstance(err, RepositoryNotFoundError) or status in (401, 403):
            return UpstreamAuthError(
                f"{what}: {self.endpoint} refused access to {self.repo_id} (HTTP {status}). If the repo id is "
                "right, it is gated or private: set HF_TOKEN or run `hf auth login`, and accept the dataset's "
                f"terms on {self.endpoint}/datasets/{self.repo_id}"
            )
        if isinstance(err, RemoteEntryNotFoundError):
            return _EntryMissing(f"{what}: not found on {self.endpoint}")
        if status is not None:
            return UpstreamError(
                f"{what}: {self.endpoint} answered HTTP {status}, which a retry cannot fix"
            )
        return UpstreamError(
            f"{what}: {self.endpoint} answered in a way we cannot use ({type(err).__name__}); "
            "check that the endpoint is a Hugging Face Hub"
        )


class _EntryMissing(UpstreamError):
    """A path that does not exist at the pinned commit."""


class _Activity:
    """When a download last received bytes (or was told by the server to wait)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


class _Partial:
    """The stable partial file of one download, hashed as it grows so it is read at most once.

    Hashing runs on a thread of its own (hashlib releases the GIL), so it overlaps the network
    and the disk instead of adding to them. Not `hashing.sha256_file`: a resume needs the
    running hash state, not a final digest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._out: BinaryIO | None = None
        self._pending: queue.Queue[bytes | None] | None = None
        self._hasher: threading.Thread | None = None
        path.touch(exist_ok=True)
        self.rehash()

    def __enter__(self) -> _Partial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sha256(self) -> str:
        self._drain()
        return self._hash.hexdigest()

    def matches(self, file: RemoteFile) -> bool:
        return self.size == file.size and self.sha256 == file.sha256

    def rehash(self) -> None:
        """Hash what is on disk now (a partial from an earlier process, or Xet's output)."""
        self.close()
        self._hash, self.size = hashlib.sha256(), 0
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                self._hash.update(chunk)
                self.size += len(chunk)

    def write(self, chunk: bytes) -> None:
        if self._out is None:
            self._out = self.path.open("ab")
        if self._pending is None:
            self._pending = queue.Queue(maxsize=64)
            self._hasher = threading.Thread(
                target=_hash_chunks,
                args=(self._pending, self._hash),
                name="tol-sha256",
                daemon=True,
            )
            self._hasher.start()
        self._out.write(chunk)
        self._pending.put(chunk)
        self.size += len(chunk)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        self._drain()
        if self._out is not None:
            self._out.close()
            self._out = None

    def reset(self) -> None:
        self.close()
        self.path.write_bytes(b"")
        self._hash, self.size = hashlib.sha256(), 0

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def publish(self, dest: Path) -> None:
        """Atomic: `dest` is either absent or whole. Durability is the publisher's job (the
        mirror fsyncs each file before linking it into a generation), so no fsync here."""
        self.close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, dest)

    def _drain(self) -> None:
        """Wait until every written byte is hashed; stop the hashing thread."""
        if self._pending is not None and self._hasher is not None:
            self._pending.put(None)
            self._hasher.join()
            self._pending = self._hasher = None


def _hash_chunks(pending: queue.Queue[bytes | None], digest: Any) -> None:
    while (chunk := pending.get()) is not None:
        digest.update(chunk)


def _ignore(_: int) -> None:
    return None


def _xet_enabled() -> bool:
    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port or default


def _status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    return response.status_code if isinstance(response, httpx2.Response) else None


def _transient(err: Exception, endpoint: str) -> tuple[str, float | None] | None:
    """(reason, wait the server asked for) when another attempt may succeed, else None.

    A 401/403 from another origin than the Hub's is the CDN refusing a signed URL that has
    expired: the next attempt asks the Hub for a fresh one.
    """
    if isinstance(err, _Transient):
        return str(err), None
    if isinstance(err, httpx2.TimeoutException):
        return f"timed out ({type(err).__name__})", None
    if isinstance(err, (httpx2.NetworkError, httpx2.RemoteProtocolError)):
        return f"connection failed ({type(err).__name__})", None
    response = err.response if isinstance(err, HfHubHTTPError) else None
    if response is None:
        return None
    if response.status_code in RETRY_STATUSES:
        return f"HTTP {response.status_code}", _server_wait(response.headers)
    host = _origin(str(response.url))
    if response.status_code in (401, 403) and host != _origin(endpoint):
        return f"HTTP {response.status_code} from {host[1]}:{host[2]}; asking for a fresh URL", None
    return None


def _json_list(response: httpx2.Response, where: str) -> list[Any]:
    """A listing page's JSON, which must be a list."""
    try:
        data = response.json()
    except ValueError:
        raise invalid("listing (not JSON)", response.text[:200], where) from None
    if not isinstance(data, list):
        raise invalid("listing (not a list)", data, where)
    return data


def _server_wait(headers: httpx2.Headers) -> float | None:
    """The wait the server asks for: `RateLimit` when the quota is spent, else `Retry-After`."""
    limit = parse_ratelimit_headers(headers)
    if limit is not None and limit.remaining == 0:
        return float(limit.reset_in_seconds)
    retry_after = headers.get("Retry-After", "").strip()
    return float(retry_after) if retry_after.isdigit() else None


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _range_start(response: httpx2.Response) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _announced_total(response: httpx2.Response) -> int | None:
    """The whole file's size as this response states it (Content-Range, else Content-Length)."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match and match.group(3) != "*":
        return int(match.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() and response.status_code == 200 else None

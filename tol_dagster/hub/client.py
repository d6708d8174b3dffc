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
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import HfFileMetadata, get_hf_file_metadata, hf_hub_url, xet_get
from huggingface_hub.hf_api import DatasetInfo
from huggingface_hub.utils import get_session, hf_raise_for_status

from tol_dagster import __version__
from tol_dagster.errors import IntegrityError, RevisionGone, SettingsError, UpstreamError
from tol_dagster.hub import failures
from tol_dagster.hub.card import expected_rows
from tol_dagster.hub.origin import LIBRARY, origin, request_headers
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.hub.retry import Activity, Retrier, RetryPolicy
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
#: Reads of the partial when its hash must be rebuilt.
CHUNK_BYTES = 8 * 1024 * 1024


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
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

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
        activity = Activity()
        what = f"download of {file.path} at {commit[:12]}"

        def received(count: int) -> None:
            activity.touch()
            on_progress(count)
            self._retrier.check_deadline(what)

        def attempt() -> None:
            nonlocal use_xet
            meta = get_hf_file_metadata(
                url,
                token=self._token,
                timeout=min(self._retrier.timeout(), self.retry.stall_timeout_s),
                endpoint=self.endpoint,
                retry_on_errors=False,
                library_name=LIBRARY,
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
                    raise failures.TransientFailure(
                        f"Xet download failed ({type(err).__name__}); falling back to HTTP"
                    ) from err
            self._fetch_http(file, urljoin(url, meta.location), partial, received)

        try:
            self._retrier.run(what, attempt, progress=lambda: partial.size, activity=activity)
        except failures.EntryMissing as err:
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
            headers=request_headers(self._token, to_hub=True),
            expected_size=file.size,
            displayed_filename=file.name,
        )
        partial.rehash()
        on_progress(partial.size)

    def _fetch_http(
        self, file: RemoteFile, location: str, partial: _Partial, on_progress: Callable[[int], None]
    ) -> None:
        """One GET from the partial's current size; raises `_Transient` if the body ends early."""
        same_origin = origin(location) == origin(self.endpoint)
        headers = request_headers(self._token, to_hub=same_origin)
        headers["Accept-Encoding"] = "identity"
        start = partial.size
        if start:
            headers["Range"] = f"bytes={start}-"
        # A read waits at most the stall timeout: a body that stops is noticed in time.
        limit = self._retrier.timeout()
        timeout = httpx2.Timeout(limit, read=min(limit, self.retry.stall_timeout_s))
        with get_session().stream("GET", location, headers=headers, timeout=timeout) as response:
            if response.status_code == 416:
                partial.reset()
                raise failures.TransientFailure(
                    f"range from byte {start} not satisfiable; starting again from byte 0"
                )
            hf_raise_for_status(response)
            total = _announced_total(response)
            if start and response.status_code == 206 and _range_start(response) != start:
                partial.reset()
                raise failures.TransientFailure(
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
            raise failures.TransientFailure(f"body ended at byte {partial.size} of {expected}")

    @contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        """Two threads never write the same partial."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


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


def _json_list(response: httpx2.Response, where: str) -> list[Any]:
    """A listing page's JSON, which must be a list."""
    try:
        data = response.json()
    except ValueError:
        raise invalid("listing (not JSON)", response.text[:200], where) from None
    if not isinstance(data, list):
        raise invalid("listing (not a list)", data, where)
    return data


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

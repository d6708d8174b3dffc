"""Downloads verified by sha256 and resumed across attempts and processes.

Not `hf_hub_download`: when the Hub is down that call returns a stale local file, it never
checks the sha256, and it never resumes across processes. Here the bytes of one file go to its
stable `<sha256>.part` (`hub.partial`), resumed with a Range request by the next attempt or
process, verified for size and sha256, then renamed into place; a mismatch deletes the partial
and raises `IntegrityError`. The Xet path is taken when the Hub offers it and falls back to
plain HTTP when it fails; every attempt runs in the client's retry loop, where a download that
receives no bytes for the stall timeout fails. The bytes may come from a CDN: it never gets the
token.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import HfFileMetadata, get_hf_file_metadata, hf_hub_url, xet_get
from huggingface_hub.utils import get_session, hf_raise_for_status

from tol_dagster import __version__
from tol_dagster.errors import IntegrityError, RevisionGone
from tol_dagster.hub import failures
from tol_dagster.hub.origin import LIBRARY, origin, request_headers
from tol_dagster.hub.partial import PartialFile
from tol_dagster.hub.remote import RemoteFile
from tol_dagster.hub.retry import Activity, Retrier
from tol_dagster.hub.untrusted import check_sha256, check_size

logger = logging.getLogger("tol_dagster.hub.download")

#: Receives the byte count of each chunk as it arrives from the network.
Progress = Callable[[int], None]


class Downloader:
    """Verified downloads of one repo's files. Safe to share between threads: two threads never
    write the same partial."""

    def __init__(self, endpoint: str, repo_id: str, token: str | bool, retrier: Retrier) -> None:
        """`token` False (not None) sends none, whatever huggingface_hub has saved."""
        self.endpoint = endpoint
        self.repo_id = repo_id
        self._token = token
        self._retrier = retrier
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def download(
        self, file: RemoteFile, commit: str, dest: Path, partial_dir: Path, on_progress: Progress
    ) -> Path:
        """`file` as of `commit` in `dest`, verified: `HubClient.download`, which it serves."""
        where = f"{file.path} in {self.repo_id}@{commit[:12]}"
        check_sha256(file.sha256, where)
        check_size(file.size, where)
        partial_dir.mkdir(parents=True, exist_ok=True)
        with (
            self._exclusive(file.sha256),
            PartialFile(partial_dir / f"{file.sha256}.part") as partial,
        ):
            resumed = partial.size > 0
            self._fetch(file, commit, partial, on_progress)
            if resumed and not partial.matches(file):
                logger.warning(
                    "%s: the resumed partial does not verify; fetching it again from byte 0",
                    file.path,
                )
                partial.reset()
                self._fetch(file, commit, partial, on_progress)
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
        self,
        file: RemoteFile,
        commit: str,
        partial: PartialFile,
        on_progress: Progress,
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
                timeout=min(self._retrier.timeout(), self._retrier.policy.stall_timeout_s),
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
        partial: PartialFile,
        on_progress: Progress,
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
        self,
        file: RemoteFile,
        location: str,
        partial: PartialFile,
        on_progress: Progress,
    ) -> None:
        """One GET from the partial's current size; raises `TransientFailure` if the body ends early."""
        same_origin = origin(location) == origin(self.endpoint)
        headers = request_headers(self._token, to_hub=same_origin)
        headers["Accept-Encoding"] = "identity"
        start = partial.size
        if start:
            headers["Range"] = f"bytes={start}-"
        # A read waits at most the stall timeout: a body that stops is noticed in time.
        limit = self._retrier.timeout()
        timeout = httpx2.Timeout(limit, read=min(limit, self._retrier.policy.stall_timeout_s))
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


def _xet_enabled() -> bool:
    """Whether Xet may be used, as huggingface_hub decides it: hf_xet installed and not turned
    off by `HF_HUB_DISABLE_XET`."""
    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


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

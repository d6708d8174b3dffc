"""The HTTP side of the local Hub: routes, wire shapes, byte ranges, the CDN origin, faults.

Two listening sockets: the Hub origin (API, `/resolve`, `/_admin`) and a second origin standing
in for the Hub's CDN. LFS files are answered on the Hub origin by a 302 to the CDN carrying
`X-Repo-Commit`, `X-Linked-Etag` and `X-Linked-Size`, as the real Hub does; because the CDN is
another origin the client reads the metadata from the 302 and sends no token there. CDN URLs
are signed so that the CDN cannot be used to bypass a required token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tol_dagster.devtools.localhub.faults import Fault, FaultBook, Stats, rewrite_json
from tol_dagster.devtools.localhub.repo import Commit, FileEntry, RepoState
from tol_dagster.errors import UpstreamError
from tol_dagster.hub.card import parse_card
from tol_dagster.settings import DEFAULT_REPO_ID

log = logging.getLogger(__name__)

TREE_PAGE = 1000
TREE_PAGE_EXPANDED = 50
COMMITS_PAGE = 50
_SEND_CHUNK = 1 << 20
_SENDFILE_CHUNK = 8 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_AUTHOR = {"user": "localhub", "avatar": ""}


class HubError(Exception):
    """An error answered the way the Hub does: a status, `X-Error-Code` and a JSON body."""

    def __init__(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Reply:
    """A response: a small body in memory, or a byte span of a file streamed from disk."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @classmethod
    def json(cls, data: object, headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(
            200, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body
        )

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


def card_data(text: str) -> dict[str, Any] | None:
    """The card's front matter as the Hub's `cardData`; None when it is unreadable, as on the Hub."""
    try:
        return parse_card(text)
    except UpstreamError:
        return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) asked by a `Range` header; None for the whole file.

    Raises HubError 416 for a range outside the file. Malformed or multi-range headers are
    ignored (a server may always answer 200 with the whole body).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
        if int(last) == 0:
            start = size
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    if start >= size or end < start:
        raise HubError(
            416,
            None,
            f"range {header} is outside the file ({size} bytes)",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end - start + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: LocalHub, origin: str) -> None:
        self.hub = hub
        self.origin = origin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("local Hub connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Drop kept-alive connections so a stopped Hub really stops answering."""
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "tol-dagster-localhub"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this, Nagle plus delayed ACKs
        # add ~40 ms to every small answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        kind, action = hub.route(self.server.origin, method, segments, query, body, self.headers)
        decoded_path = "/" + "/".join(segments)
        if kind is None:  # admin: never counted, never faulted
            self._send(method, self._run(action), None, [])
            return
        hub.stats_book.count(kind)
        if "Range" in self.headers and kind in ("resolve_get", "lfs_get"):
            hub.stats_book.count("range_requests")
        faults = hub.faults.take(decoded_path, kind, has_body=method != "HEAD")
        for fault in faults:
            if fault.kind == "delay":
                time.sleep(fault.delay_s)
        for fault in faults:
            if fault.kind == "rate_limit":
                error = HubError(
                    429,
                    None,
                    "rate limited by an injected fault",
                    {"Retry-After": str(fault.retry_after)},
                )
                self._send(method, _error_reply(error), kind, [])
                return
            if fault.kind == "status":
                error = HubError(
                    fault.status, None, f"status {fault.status} from an injected fault"
                )
                self._send(method, _error_reply(error), kind, [])
                return
        reply = self._run(action)
        for fault in faults:
            if fault.kind == "rewrite" and reply.status == 200 and reply.file is None:
                try:
                    reply.body = rewrite_json(reply.body, fault.edits)
                except (ValueError, LookupError, TypeError) as error:
                    message = f"rewrite fault {fault.edits} does not fit the answer: {error!r}"
                    reply = _error_reply(HubError(500, None, message))
        self._send(
            method, reply, kind, [f for f in faults if f.kind in ("cut", "bandwidth", "stall")]
        )

    def _run(self, action: Callable[[], Reply]) -> Reply:
        try:
            return action()
        except HubError as error:
            return _error_reply(error)
        except Exception as error:
            log.exception("local Hub failed on %s", self.path)
            return _error_reply(HubError(500, None, f"local Hub internal error: {error}"))

    def _send(self, method: str, reply: Reply, kind: str | None, faults: list[Fault]) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(reply.content_length))
        self.end_headers()
        if method == "HEAD" or reply.content_length == 0:
            return
        cut = min((f.after_bytes for f in faults if f.kind in ("cut", "stall")), default=None)
        rate = min((f.bytes_per_s for f in faults if f.kind == "bandwidth"), default=None)
        budget = reply.content_length if cut is None else min(cut, reply.content_length)
        self._stream(reply, budget, rate, lambda n: self._account(kind, reply.status, n))
        if cut is not None and budget < reply.content_length:
            stall = max((f.delay_s for f in faults if f.kind == "stall"), default=0.0)
            self.server.stopping.wait(stall)  # silent, connection open; cut short by stop()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _account(self, kind: str | None, status: int, n: int) -> None:
        """Count body bytes before they are written, so the counters are final by the time
        the client has the whole body (a write that then fails is over-counted)."""
        if kind is not None:
            self.server.hub.stats_book.add_bytes(kind, n)
            if status == 206:
                self.server.hub.stats_book.add_bytes("range_requests", n)

    def _stream(
        self, reply: Reply, budget: int, rate: int | None, account: Callable[[int], None]
    ) -> None:
        """Write `budget` body bytes: zero-copy from files, paced to `rate` bytes/s when set."""
        if rate is None and reply.file is not None:
            with reply.file.open("rb") as handle:
                for offset in range(reply.offset, reply.offset + budget, _SENDFILE_CHUNK):
                    count = min(_SENDFILE_CHUNK, reply.offset + budget - offset)
                    account(count)
                    self.connection.sendfile(handle, offset, count)
            return
        size = budget if rate is None else max(4096, min(_SEND_CHUNK, rate // 50))  # ~20 ms a write
        if reply.file is None:
            chunks: Iterator[bytes] = (
                reply.body[i : min(i + size, budget)] for i in range(0, budget, size)
            )
        else:
            chunks = _file_chunks(reply.file, reply.offset, budget, size)
        start = time.monotonic()
        sent = 0
        for chunk in chunks:
            account(len(chunk))
            self.wfile.write(chunk)
            sent += len(chunk)
            ahead = 0.0 if rate is None else sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def _file_chunks(path: Path, offset: int, length: int, size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def _error_reply(error: HubError) -> Reply:
    headers = {"Content-Type": "application/json; charset=utf-8", **error.headers}
    if error.code:
        headers["X-Error-Code"] = error.code
    headers["X-Error-Message"] = quote(error.message, safe=" /:=,.'()-_")
    body = json.dumps({"error": error.message}).encode()
    return Reply(error.status, headers, body)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() in ("1", "true", "yes")


class LocalHub:
    """A Hub-compatible server for one folder, for development and tests. Not a Hub.

    `with LocalHub(root) as hub:` serves `root` as the dataset repo `repo_id` on
    `hub.endpoint`; pass `endpoint=hub.endpoint` to the `huggingface_hub` client.
    """

    def __init__(
        self,
        root: Path,
        *,
        repo_id: str = DEFAULT_REPO_ID,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.repo = RepoState(Path(root))
        self.repo_id = repo_id
        self.token = token
        self.host = host
        self.port = port
        self.faults = FaultBook()
        self.stats_book = Stats()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._cards: dict[str, dict[str, Any] | None] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> LocalHub:
        """Listen on the Hub origin and the CDN origin; scan the folder once."""
        self.repo.head()
        hub = _Server((self.host, self.port), self, "hub")
        cdn = _Server((self.host, 0), self, "cdn")
        self._servers = [hub, cdn]
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stopping.set()
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return self._origin(0)

    @property
    def cdn_endpoint(self) -> str:
        return self._origin(1)

    def _origin(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError(
                "the local Hub is not running; call start() or use it as a context manager"
            )
        return f"http://{self.host}:{self._servers[index].server_port}"

    # --- control -------------------------------------------------------------------------
    def head_commit(self) -> str:
        """The current commit id of main (rescans the folder)."""
        return self.repo.head().id

    def stats(self) -> dict[str, dict[str, int]]:
        return self.stats_book.snapshot()

    def reset(self) -> None:
        """Clear the counters and the faults."""
        self.stats_book.reset()
        self.faults.clear()

    def add_fault(self, fault: Fault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def force_push(self) -> str:
        """Rewrite history: earlier commit ids stop resolving; returns the new head id."""
        return self.repo.force_push().id

    # --- routing -------------------------------------------------------------------------
    def route(
        self,
        origin: str,
        method: str,
        segments: list[str],
        query: dict[str, list[str]],
        body: bytes,
        headers: Any,
    ) -> tuple[str | None, Callable[[], Reply]]:
        """(request kind or None for admin, the action that answers it)."""
        if origin == "cdn":
            return "lfs_get", lambda: self._cdn(segments, query, headers)
        if segments[:1] == ["_admin"]:
            return None, lambda: self._admin(method, segments[1:], body)
        kind, action = self._hub_route(method, segments, query, body, headers)
        return kind, lambda: self._guarded(headers, action)

    def _hub_route(
        self,
        method: str,
        segments: list[str],
        query: dict[str, list[str]],
        body: bytes,
        headers: Any,
    ) -> tuple[str, Callable[[], Reply]]:
        if len(segments) >= 4 and segments[0] == "api" and method in ("GET", "POST"):
            repo, rest = segments[2:4], segments[4:]
            op = rest[0] if rest else ""
            if method == "GET" and op == "":
                return "info", lambda: self._info(repo, segments[1], None, query)
            if method == "GET" and op == "revision" and len(rest) >= 2:
                return "info", lambda: self._info(repo, segments[1], "/".join(rest[1:]), query)
            if method == "GET" and op == "refs":
                return "refs", lambda: self._refs(repo, segments[1], query)
            if method == "GET" and op == "commits" and len(rest) >= 2:
                return "commits", lambda: self._commits(repo, segments[1], rest[1], query)
            if method == "GET" and op == "tree" and len(rest) >= 2:
                return "tree", lambda: self._tree(
                    repo, segments[1], rest[1], "/".join(rest[2:]), query
                )
            if method == "POST" and op == "paths-info" and len(rest) >= 2:
                return "paths_info", lambda: self._paths_info(repo, segments[1], rest[1], body)
        if len(segments) >= 5 and method in ("GET", "HEAD") and "resolve" in segments[:4]:
            at = segments.index("resolve")
            kind = "resolve_head" if method == "HEAD" else "resolve_get"
            repo_type = segments[0] if at == 3 else "models"
            repo, rev, path = segments[at - 2 : at], segments[at + 1], "/".join(segments[at + 2 :])
            return kind, lambda: self._resolve(repo, repo_type, rev, path, headers)

        def not_found() -> Reply:
            raise HubError(
                404, None, f"the local Hub has no route for {method} /{'/'.join(segments)}"
            )

        return "other", not_found

    def _guarded(self, headers: Any, action: Callable[[], Reply]) -> Reply:
        """Require the token when one is set, answering GatedRepo as the Hub does."""
        if self.token is not None:
            sent = headers.get("Authorization") or ""
            if not sent:
                raise HubError(
                    401,
                    "GatedRepo",
                    f"{self.repo_id} is gated: send a token (Authorization: Bearer ...)",
                )
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                raise HubError(
                    403,
                    "GatedRepo",
                    f"{self.repo_id} is gated and the token sent is not authorized",
                )
        return action()

    def _commit_for(self, repo: list[str], repo_type: str, revision: str) -> Commit:
        if repo_type != "datasets" or "/".join(repo) != self.repo_id:
            raise HubError(
                404,
                "RepoNotFound",
                f"repository {repo_type}/{'/'.join(repo)} not found; this local Hub serves datasets/{self.repo_id}",
            )
        commit = self.repo.resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"invalid rev id: {revision}")
        return commit

    # --- API handlers --------------------------------------------------------------------
    def _info(
        self, repo: list[str], repo_type: str, revision: str | None, query: dict[str, list[str]]
    ) -> Reply:
        commit = self._commit_for(repo, repo_type, revision or "main")
        blobs = _flag(query, "blobs")
        siblings = []
        for entry in commit.files.values():
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": entry.pointer_size,
                    }
            siblings.append(sibling)
        history = self.repo.history(commit)
        return Reply.json(
            {
                "_id": hashlib.sha1(self.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
                "id": self.repo_id,
                "author": self.repo_id.split("/")[0],
                "sha": commit.id,
                "lastModified": commit.date,
                "createdAt": history[-1].date,
                "private": False,
                "gated": "manual" if self.token else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "cardData": self._card(commit),
                "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
        )

    def _card(self, commit: Commit) -> dict[str, Any] | None:
        entry = commit.files.get("README.md")
        if entry is None:
            return None
        if entry.sha256 not in self._cards:
            source = self.repo.source(entry.path, entry.sha256)
            self._cards[entry.sha256] = (
                card_data(source.read_text(encoding="utf-8")) if source else None
            )
        return self._cards[entry.sha256]

    def _refs(self, repo: list[str], repo_type: str, query: dict[str, list[str]]) -> Reply:
        head = self._commit_for(repo, repo_type, "main")
        data: dict[str, Any] = {
            "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": head.id}],
            "converts": [],
            "tags": [],
        }
        if _flag(query, "include_prs"):
            data["pullRequests"] = []
        return Reply.json(data)

    def _commits(
        self, repo: list[str], repo_type: str, revision: str, query: dict[str, list[str]]
    ) -> Reply:
        commit = self._commit_for(repo, repo_type, revision)
        page = int((query.get("p") or ["0"])[0])
        history = self.repo.history(commit)
        items = [
            {
                "id": c.id,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [_AUTHOR],
            }
            for c in history[page * COMMITS_PAGE : (page + 1) * COMMITS_PAGE]
        ]
        headers = {}
        if (page + 1) * COMMITS_PAGE < len(history):
            url = f"{self.endpoint}/api/{repo_type}/{'/'.join(repo)}/commits/{quote(revision, safe='')}?p={page + 1}"
            headers["Link"] = f'<{url}>; rel="next"'
        return Reply.json(items, headers)

    def _tree(
        self, repo: list[str], repo_type: str, revision: str, path: str, query: dict[str, list[str]]
    ) -> Reply:
        commit = self._commit_for(repo, repo_type, revision)
        path = path.strip("/")
        recursive, expand = _flag(query, "recursive"), _flag(query, "expand")
        listing = _Listing(
            commit, self.repo.last_changes(commit) if expand else None, self.repo.history(commit)
        )
        if path and path not in listing.dirs:
            raise HubError(
                404, "EntryNotFound", f"{path} does not exist on {revision} or is not a folder"
            )
        entries = listing.children(path, recursive)
        size = TREE_PAGE_EXPANDED if expand else TREE_PAGE
        start = int((query.get("cursor") or ["0"])[0] or 0)
        headers = {}
        if start + size < len(entries):
            base = (
                f"{self.endpoint}/api/{repo_type}/{'/'.join(repo)}/tree/{quote(revision, safe='')}"
            )
            suffix = f"/{quote(path, safe='')}" if path else ""
            flags = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
            headers["Link"] = f'<{base}{suffix}?{flags}&cursor={start + size}>; rel="next"'
        return Reply.json([listing.entry(p) for p in entries[start : start + size]], headers)

    def _paths_info(self, repo: list[str], repo_type: str, revision: str, body: bytes) -> Reply:
        commit = self._commit_for(repo, repo_type, revision)
        form = parse_qs(body.decode())
        expand = _flag(form, "expand")
        listing = _Listing(
            commit, self.repo.last_changes(commit) if expand else None, self.repo.history(commit)
        )
        wanted = [p.strip("/") for p in form.get("paths", [])]
        return Reply.json(
            [listing.entry(p) for p in wanted if p in commit.files or p in listing.dirs]
        )

    # --- bytes ---------------------------------------------------------------------------
    def _resolve(
        self, repo: list[str], repo_type: str, revision: str, path: str, headers: Any
    ) -> Reply:
        commit = self._commit_for(repo, repo_type, revision)
        found = {"X-Repo-Commit": commit.id}
        entry = commit.files.get(path)
        source = self.repo.source(path, entry.sha256) if entry is not None else None
        if entry is None or source is None:
            raise HubError(
                404, "EntryNotFound", f"{path} does not exist at commit {commit.id}", found
            )
        if entry.lfs:
            return Reply(
                302,
                {
                    **found,
                    "Location": self._cdn_url(entry),
                    "ETag": f'"{entry.sha256}"',
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                },
            )
        return _file_reply(source, entry.size, f'"{entry.blob_id}"', headers.get("Range"), found)

    def _cdn_url(self, entry: FileEntry) -> str:
        sig = self._sign(entry.sha256, entry.path)
        return f"{self.cdn_endpoint}/lfs/{entry.sha256}/{quote(entry.path)}?sig={sig}"

    def _sign(self, sha256: str, path: str) -> str:
        return hmac.new(self.repo.secret, f"{sha256}/{path}".encode(), "sha256").hexdigest()

    def _cdn(self, segments: list[str], query: dict[str, list[str]], headers: Any) -> Reply:
        """Bytes by content address, like the Hub's CDN: no token, but a signed URL."""
        if len(segments) < 3 or segments[0] != "lfs":
            raise HubError(404, None, "not a CDN URL of this local Hub")
        sha256, path = segments[1], "/".join(segments[2:])
        signature = (query.get("sig") or [""])[0]
        if not hmac.compare_digest(signature, self._sign(sha256, path)):
            raise HubError(
                403, None, "CDN URL not signed by this local Hub; ask /resolve for a fresh one"
            )
        source = self.repo.source(path, sha256)
        if source is None:
            raise HubError(404, None, f"the bytes of {path} at sha256 {sha256} are gone")
        name = path.rsplit("/", 1)[-1]
        extra = {"Content-Disposition": f'attachment; filename="{quote(name)}"'}
        return _file_reply(
            source, source.stat().st_size, f'"{sha256}"', headers.get("Range"), extra
        )

    # --- admin ---------------------------------------------------------------------------
    def _admin(self, method: str, segments: list[str], body: bytes) -> Reply:
        op = "/".join(segments)
        if method == "GET" and op == "stats":
            return Reply.json(self.stats())
        if method == "GET" and op == "faults":
            return Reply.json([f.to_json() for f in self.faults.active()])
        if method == "POST" and op == "faults":
            try:
                data = json.loads(body or b"null")
                items = data if isinstance(data, list) else [data]
                faults = [Fault.from_json(item) for item in items]
            except (ValueError, TypeError) as error:
                raise HubError(400, None, f"bad fault: {error}") from None
            for fault in faults:
                self.add_fault(fault)
            return Reply.json({"added": len(faults)})
        if method == "POST" and op == "reset":
            self.reset()
            return Reply.json({"reset": True})
        if method == "POST" and op == "force-push":
            return Reply.json({"head": self.force_push()})
        raise HubError(404, None, f"unknown admin call {method} /_admin/{op}")


def _file_reply(
    source: Path, size: int, etag: str, range_header: str | None, headers: dict[str, str]
) -> Reply:
    base = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        **headers,
    }
    span = byte_range(range_header, size)
    if span is None:
        return Reply(200, base, file=source, offset=0, length=size)
    start, length = span
    base["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    return Reply(206, base, file=source, offset=start, length=length)


class _Listing:
    """Tree entries of one commit: files, the folders they imply, and (expanded) last commits."""

    def __init__(self, commit: Commit, last: dict[str, int] | None, history: list[Commit]) -> None:
        self.commit = commit
        self.last = last
        self.history = history
        self.dirs: dict[str, list[str]] = {}
        for path in commit.files:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                self.dirs.setdefault("/".join(parts[:depth]), []).append(path)

    def children(self, folder: str, recursive: bool) -> list[str]:
        prefix = f"{folder}/" if folder else ""
        names = [p for p in (*self.dirs, *self.commit.files) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix) :]]
        return sorted(names)

    def entry(self, path: str) -> dict[str, Any]:
        file = self.commit.files.get(path)
        if file is not None:
            data: dict[str, Any] = {
                "type": "file",
                "oid": file.blob_id,
                "size": file.size,
                "path": path,
            }
            if file.lfs:
                data["lfs"] = {
                    "oid": file.sha256,
                    "size": file.size,
                    "pointerSize": file.pointer_size,
                }
            members = [path]
        else:
            members = self.dirs[path]
            oid = hashlib.sha1(usedforsecurity=False)
            for member in members:
                oid.update(f"{member}\0{self.commit.files[member].blob_id}\n".encode())
            data = {"type": "directory", "oid": oid.hexdigest(), "size": 0, "path": path}
        if self.last is not None:
            newest = self.history[min(self.last[m] for m in members)]
            data["lastCommit"] = {"id": newest.id, "title": newest.title, "date": newest.date}
        return data


def serve_forever(
    root: Path, *, port: int = 0, repo_id: str = DEFAULT_REPO_ID, token: str | None = None
) -> None:
    """Serve `root` until SIGINT/SIGTERM; the first stdout line is `endpoint=<url>`."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalHub(Path(root), repo_id=repo_id, token=token, port=port) as hub:
        print(f"endpoint={hub.endpoint}", flush=True)
        print(
            f"cdn={hub.cdn_endpoint} repo={repo_id} head={hub.head_commit()} pid={os.getpid()}",
            flush=True,
        )
        stop.wait()

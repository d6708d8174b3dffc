"""The local Hub's sockets: a threaded HTTP/1.1 server per origin, faults applied on the wire.

Each request is routed by the `Router` (the `LocalHub`), counted, delayed, refused or cut as
the faults it matches say, and its body streamed zero-copy from disk (`sendfile`) unless a
bandwidth cap paces it. Kept-alive connections are tracked so that stopping really stops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from tol_dagster.devtools.localhub.faults import Fault, FaultBook, Stats, rewrite_json
from tol_dagster.devtools.localhub.replies import HubError, Reply, Request, error_reply

log = logging.getLogger(__name__)

_SEND_CHUNK = 1 << 20
_SENDFILE_CHUNK = 8 << 20


class Router(Protocol):
    """What the HTTP side needs from the Hub: routes, the faults to apply, the counters."""

    faults: FaultBook
    stats_book: Stats

    def route(self, request: Request) -> tuple[str | None, Callable[[], Reply]]: ...


class HubHttpServer(ThreadingHTTPServer):
    """One origin ("hub" or "cdn") of the local Hub, a thread per connection."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], router: Router, origin: str) -> None:
        self.router = router
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
    server: HubHttpServer
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
        router = self.server.router
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        request = Request(self.server.origin, method, segments, query, body, self.headers)
        kind, action = router.route(request)
        decoded_path = "/" + "/".join(segments)
        if kind is None:  # admin: never counted, never faulted
            self._send(method, self._run(action), None, [])
            return
        router.stats_book.count(kind)
        if "Range" in self.headers and kind in ("resolve_get", "lfs_get"):
            router.stats_book.count("range_requests")
        faults = router.faults.take(decoded_path, kind, has_body=method != "HEAD")
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
                self._send(method, error_reply(error), kind, [])
                return
            if fault.kind == "status":
                error = HubError(
                    fault.status, None, f"status {fault.status} from an injected fault"
                )
                self._send(method, error_reply(error), kind, [])
                return
        reply = self._run(action)
        for fault in faults:
            if fault.kind == "rewrite" and reply.status == 200 and reply.file is None:
                try:
                    reply.body = rewrite_json(reply.body, fault.edits)
                except (ValueError, LookupError, TypeError) as error:
                    message = f"rewrite fault {fault.edits} does not fit the answer: {error!r}"
                    reply = error_reply(HubError(500, None, message))
        self._send(
            method, reply, kind, [f for f in faults if f.kind in ("cut", "bandwidth", "stall")]
        )

    def _run(self, action: Callable[[], Reply]) -> Reply:
        try:
            return action()
        except HubError as error:
            return error_reply(error)
        except Exception as error:
            log.exception("local Hub failed on %s", self.path)
            return error_reply(HubError(500, None, f"local Hub internal error: {error}"))

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
            self.server.router.stats_book.add_bytes(kind, n)
            if status == 206:
                self.server.router.stats_book.add_bytes("range_requests", n)

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

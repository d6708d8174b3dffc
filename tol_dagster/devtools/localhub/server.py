"""The local Hub: its lifecycle, control calls and routes, over the folder it serves.

Two listening sockets: the Hub origin (API, `/resolve`, `/_admin`) and a second origin standing
in for the Hub's CDN. LFS files are answered on the Hub origin by a 302 to the CDN carrying
`X-Repo-Commit`, `X-Linked-Etag` and `X-Linked-Size`, as the real Hub does; because the CDN is
another origin the client reads the metadata from the 302 and sends no token there. CDN URLs
are signed so that the CDN cannot be used to bypass a required token.

Here: starting and stopping, the control calls (faults, counters, force-push), the routes and
the token gate. The API's answers are in `api`, their shapes in `replies`, the sockets and the
faults on the wire in `http_server`, the folder seen as a repo in `repo`.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from tol_dagster.devtools.localhub.api import DatasetApi
from tol_dagster.devtools.localhub.faults import Fault, FaultBook, Stats
from tol_dagster.devtools.localhub.http_server import HubHttpServer
from tol_dagster.devtools.localhub.replies import HubError, Reply, Request
from tol_dagster.devtools.localhub.repo import RepoState
from tol_dagster.settings import DEFAULT_REPO_ID


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
        self._servers: list[HubHttpServer] = []
        self._threads: list[threading.Thread] = []
        self.api = DatasetApi(self.repo, repo_id=repo_id, token=token, origins=self)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> LocalHub:
        """Listen on the Hub origin and the CDN origin; scan the folder once."""
        self.repo.head()
        hub = HubHttpServer((self.host, self.port), self, "hub")
        cdn = HubHttpServer((self.host, 0), self, "cdn")
        self._servers = [hub, cdn]
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both origins, cutting kept-alive connections and stalled answers short."""
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
        """The Hub origin's URL, to pass as `endpoint=` to the huggingface_hub client."""
        return self._origin(0)

    @property
    def cdn_endpoint(self) -> str:
        """The CDN origin's URL (where `/resolve` redirects LFS files)."""
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
        """Requests and body bytes per request kind since the last reset."""
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
    def route(self, request: Request) -> tuple[str | None, Callable[[], Reply]]:
        """(request kind or None for admin, the action that answers it)."""
        segments = request.segments
        if request.origin == "cdn":
            return "lfs_get", lambda: self.api.cdn(segments, request.query, request.headers)
        if segments[:1] == ["_admin"]:
            return None, lambda: self._admin(request.method, segments[1:], request.body)
        kind, action = self._hub_route(request)
        return kind, lambda: self._guarded(request.headers, action)

    def _hub_route(self, request: Request) -> tuple[str, Callable[[], Reply]]:
        method, segments, query = request.method, request.segments, request.query
        if len(segments) >= 4 and segments[0] == "api" and method in ("GET", "POST"):
            repo, rest = segments[2:4], segments[4:]
            op = rest[0] if rest else ""
            if method == "GET" and op == "":
                return "info", lambda: self.api.info(repo, segments[1], None, query)
            if method == "GET" and op == "revision" and len(rest) >= 2:
                return "info", lambda: self.api.info(repo, segments[1], "/".join(rest[1:]), query)
            if method == "GET" and op == "refs":
                return "refs", lambda: self.api.refs(repo, segments[1], query)
            if method == "GET" and op == "commits" and len(rest) >= 2:
                return "commits", lambda: self.api.commits(repo, segments[1], rest[1], query)
            if method == "GET" and op == "tree" and len(rest) >= 2:
                return "tree", lambda: self.api.tree(
                    repo, segments[1], rest[1], "/".join(rest[2:]), query
                )
            if method == "POST" and op == "paths-info" and len(rest) >= 2:
                return "paths_info", lambda: self.api.paths_info(
                    repo, segments[1], rest[1], request.body
                )
        if len(segments) >= 5 and method in ("GET", "HEAD") and "resolve" in segments[:4]:
            at = segments.index("resolve")
            kind = "resolve_head" if method == "HEAD" else "resolve_get"
            repo_type = segments[0] if at == 3 else "models"
            repo, rev, path = segments[at - 2 : at], segments[at + 1], "/".join(segments[at + 2 :])
            return kind, lambda: self.api.resolve(repo, repo_type, rev, path, request.headers)

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

"""The Hub's API for the one dataset repo the local Hub serves, answered from the folder.

Dataset info with the card's YAML, refs, paged commit history, paged tree listings and
paths-info, `/resolve` (LFS files by a 302 to the CDN origin carrying `X-Repo-Commit`,
`X-Linked-Etag` and `X-Linked-Size`, as the real Hub does) and the CDN's signed, token-free
byte URLs. Shapes follow what `huggingface_hub` reads; errors are the Hub's codes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from tol_dagster.devtools.localhub.replies import HubError, Reply, file_reply
from tol_dagster.devtools.localhub.repo import Commit, FileEntry, RepoState
from tol_dagster.errors import UpstreamError
from tol_dagster.hub.card import parse_card

TREE_PAGE = 1000
TREE_PAGE_EXPANDED = 50
COMMITS_PAGE = 50
_AUTHOR = {"user": "localhub", "avatar": ""}


class Origins(Protocol):
    """The running servers' URLs, for next-page links and CDN redirects."""

    @property
    def endpoint(self) -> str: ...

    @property
    def cdn_endpoint(self) -> str: ...


def card_data(text: str) -> dict[str, Any] | None:
    """The card's front matter as the Hub's `cardData`; None when it is unreadable, as on the Hub."""
    try:
        return parse_card(text)
    except UpstreamError:
        return None


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() in ("1", "true", "yes")


class DatasetApi:
    """The API answers for `repo_id`, read from `repo`; `token` only shows as `gated`."""

    def __init__(
        self, repo: RepoState, *, repo_id: str, token: str | None, origins: Origins
    ) -> None:
        self.repo = repo
        self.repo_id = repo_id
        self.token = token
        self.origins = origins
        self._cards: dict[str, dict[str, Any] | None] = {}

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

    def info(
        self, repo: list[str], repo_type: str, revision: str | None, query: dict[str, list[str]]
    ) -> Reply:
        """`GET /api/datasets/<id>[/revision/<rev>]`: the repo at a commit, its files and card."""
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

    def refs(self, repo: list[str], repo_type: str, query: dict[str, list[str]]) -> Reply:
        """`GET /api/datasets/<id>/refs`: main only, at the head commit."""
        head = self._commit_for(repo, repo_type, "main")
        data: dict[str, Any] = {
            "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": head.id}],
            "converts": [],
            "tags": [],
        }
        if _flag(query, "include_prs"):
            data["pullRequests"] = []
        return Reply.json(data)

    def commits(
        self, repo: list[str], repo_type: str, revision: str, query: dict[str, list[str]]
    ) -> Reply:
        """`GET /api/datasets/<id>/commits/<rev>`: history from `rev`, newest first, paged."""
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
            url = f"{self.origins.endpoint}/api/{repo_type}/{'/'.join(repo)}/commits/{quote(revision, safe='')}?p={page + 1}"
            headers["Link"] = f'<{url}>; rel="next"'
        return Reply.json(items, headers)

    def tree(
        self, repo: list[str], repo_type: str, revision: str, path: str, query: dict[str, list[str]]
    ) -> Reply:
        """`GET /api/datasets/<id>/tree/<rev>[/<path>]`: a folder's entries, paged by cursor."""
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
            base = f"{self.origins.endpoint}/api/{repo_type}/{'/'.join(repo)}/tree/{quote(revision, safe='')}"
            suffix = f"/{quote(path, safe='')}" if path else ""
            flags = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
            headers["Link"] = f'<{base}{suffix}?{flags}&cursor={start + size}>; rel="next"'
        return Reply.json([listing.entry(p) for p in entries[start : start + size]], headers)

    def paths_info(self, repo: list[str], repo_type: str, revision: str, body: bytes) -> Reply:
        """`POST /api/datasets/<id>/paths-info/<rev>`: the entries of the paths asked."""
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
    def resolve(
        self, repo: list[str], repo_type: str, revision: str, path: str, headers: Any
    ) -> Reply:
        """`/datasets/<id>/resolve/<rev>/<path>`: small files' bytes; LFS files a 302 to the CDN."""
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
        return file_reply(source, entry.size, f'"{entry.blob_id}"', headers.get("Range"), found)

    def _cdn_url(self, entry: FileEntry) -> str:
        sig = self._sign(entry.sha256, entry.path)
        return f"{self.origins.cdn_endpoint}/lfs/{entry.sha256}/{quote(entry.path)}?sig={sig}"

    def _sign(self, sha256: str, path: str) -> str:
        return hmac.new(self.repo.secret, f"{sha256}/{path}".encode(), "sha256").hexdigest()

    def cdn(self, segments: list[str], query: dict[str, list[str]], headers: Any) -> Reply:
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
        return file_reply(source, source.stat().st_size, f'"{sha256}"', headers.get("Range"), extra)


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
        """Entries under `folder`: its direct children, or everything below when recursive."""
        prefix = f"{folder}/" if folder else ""
        names = [p for p in (*self.dirs, *self.commit.files) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix) :]]
        return sorted(names)

    def entry(self, path: str) -> dict[str, Any]:
        """A tree entry as the Hub lists it: a file (with LFS details) or a folder."""
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

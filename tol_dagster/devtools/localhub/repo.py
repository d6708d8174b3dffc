"""A folder seen as a git-like dataset repo: content-derived commits, history, cached hashes.

Commit ids are derived from content (sha1 over the parent id and the sorted (path, sha256)
list), so restarting the server is not an upstream change while any add, edit or delete is.
State lives in `ROOT/.localhub/` (never served): one JSON file per commit, the head, a hash
cache keyed by (size, mtime_ns, inode) so rescans cost a stat per file, and copies of the
small regular (non-LFS) files so earlier commits keep their README.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tol_dagster.store import durable

STATE_DIR = ".localhub"
#: Folders under ROOT that are never part of the repo (our state, git, the client's local_dir cache).
IGNORED_DIRS = frozenset({STATE_DIR, ".git", ".cache"})
#: Like the Hub: parquet and anything over 10 MB goes through LFS, the card stays a regular file.
LFS_SUFFIXES = (".parquet",)
LFS_THRESHOLD = 10 * 1024 * 1024
#: A hash taken less than this long after the file's last write is not trusted ("racy git"):
#: coarse file-system clocks could hide a same-size rewrite behind an unchanged mtime.
RACY_NS = 100_000_000
_CHUNK = 1 << 20


def is_lfs(path: str, size: int) -> bool:
    """Whether the Hub would store `path` through LFS."""
    return path.endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file the Hub keeps in git for an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def git_blob_id(data: bytes) -> str:
    """The git blob sha1 of `data` (what the Hub calls `oid` / `blobId`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def hub_date(epoch_s: float) -> str:
    """A timestamp the way the Hub writes them: `2026-01-02T03:04:05.000Z`."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class FileEntry:
    """One file of one commit."""

    path: str
    size: int
    sha256: str
    blob_id: str  # git sha1 of the content, or of the LFS pointer for LFS files
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def to_json(self) -> list[object]:
        return [self.path, self.size, self.sha256, self.blob_id, self.lfs]

    @classmethod
    def from_json(cls, row: list[object]) -> FileEntry:
        path, size, sha256, blob_id, lfs = row
        return cls(str(path), int(str(size)), str(sha256), str(blob_id), bool(lfs))


@dataclass(frozen=True)
class Commit:
    """A snapshot of the folder: its files, parent and a title describing the change."""

    id: str
    parent: str | None
    date: str
    title: str
    message: str
    files: Mapping[str, FileEntry]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "parent": self.parent,
            "date": self.date,
            "title": self.title,
            "message": self.message,
            "files": [entry.to_json() for entry in self.files.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Commit:
        rows = data["files"]
        assert isinstance(rows, list)
        files = {entry.path: entry for entry in map(FileEntry.from_json, rows)}
        parent = data["parent"]
        return cls(
            id=str(data["id"]),
            parent=None if parent is None else str(parent),
            date=str(data["date"]),
            title=str(data["title"]),
            message=str(data["message"]),
            files=files,
        )


def commit_id(parent: str | None, files: Mapping[str, FileEntry], salt: str = "") -> str:
    """Content-derived commit id: same parent and same bytes give the same id."""
    digest = hashlib.sha1(f"parent {parent or '-'}\n{salt}".encode(), usedforsecurity=False)
    for path in sorted(files):
        digest.update(f"{path}\0{files[path].sha256}\n".encode())
    return digest.hexdigest()


def describe_change(old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]) -> tuple[str, str]:
    """A commit title and message listing what was added, updated and deleted."""
    added = sorted(set(new) - set(old))
    deleted = sorted(set(old) - set(new))
    updated = sorted(p for p in set(new) & set(old) if new[p].sha256 != old[p].sha256)
    lines = [
        f"{verb} {path}"
        for verb, paths in (("Add", added), ("Update", updated), ("Delete", deleted))
        for path in paths
    ]
    title = lines[0] if len(lines) == 1 else f"Change {len(lines)} files"
    return title, "\n".join(lines)


class RepoState:
    """The repo behind one folder. Thread-safe; safe across processes through a file lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"local Hub root {self.root} is not a folder; build a sample into it first"
            )
        self.state_dir = self.root / STATE_DIR
        (self.state_dir / "commits").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "blobs").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._hashes: dict[str, list[object]] = self._read_json("hashes.json", {})
        self._hashes_dirty = False
        self._commits: dict[str, Commit] = {}
        self._reachable: tuple[str, frozenset[str]] | None = None
        self._last_change: dict[str, dict[str, int]] = {}
        self.secret = self._load_secret()

    # --- public --------------------------------------------------------------------------
    def head(self) -> Commit:
        """Rescan the folder and return the head commit, committing any change first."""
        with self._lock, durable.file_lock(self.state_dir / "lock"):
            files = self._scan()
            head_id = self._read_head()
            head = self.commit(head_id) if head_id else None
            if head is not None and _same_content(head.files, files):
                return head
            old = head.files if head is not None else {}
            title, message = (
                describe_change(old, files) if head else ("Initial commit (local Hub)", "")
            )
            return self._write_commit(head_id, files, title, message)

    def force_push(self) -> Commit:
        """Rewrite history: a new root commit with the current files; earlier ids stop resolving."""
        with self._lock, durable.file_lock(self.state_dir / "lock"):
            files = self._scan()
            old_head = self._read_head()
            return self._write_commit(
                None,
                files,
                "Force-push (history rewritten)",
                "",
                salt=f"{old_head} {secrets.token_hex(8)}",
            )

    def history(self, commit: Commit) -> list[Commit]:
        """`commit` and its ancestors, newest first."""
        out = [commit]
        while out[-1].parent is not None:
            out.append(self.commit(out[-1].parent))
        return out

    def resolve(self, revision: str) -> Commit | None:
        """The commit `revision` names (`main`, `refs/heads/main` or a reachable id), else None.

        A commit id already known to be reachable from the stored head needs no rescan: pinned
        downloads (one per file) then cost a small read instead of a stat of every file.
        """
        if revision in ("main", "refs/heads/main"):
            return self.head()
        with self._lock:
            known = self._reachable
            if known is not None and known[0] == self._read_head() and revision in known[1]:
                return self.commit(revision)
            head = self.head()
            self._reachable = (head.id, frozenset(c.id for c in self.history(head)))
            return self.commit(revision) if revision in self._reachable[1] else None

    def commit(self, cid: str) -> Commit:
        with self._lock:
            if cid not in self._commits:
                data = json.loads((self.state_dir / "commits" / f"{cid}.json").read_text())
                self._commits[cid] = Commit.from_json(data)
            return self._commits[cid]

    def last_changes(self, commit: Commit) -> dict[str, int]:
        """For each path of `commit`: the index (0 = `commit`) in its history of its last change."""
        with self._lock:
            if commit.id not in self._last_change:
                history = self.history(commit)
                last: dict[str, int] = {}
                for index, current in enumerate(history):
                    parent = history[index + 1].files if index + 1 < len(history) else {}
                    for path, entry in current.files.items():
                        if path not in last and parent.get(path) != entry:
                            last[path] = index
                self._last_change[commit.id] = last
            return self._last_change[commit.id]

    def source(self, path: str, sha256: str) -> Path | None:
        """Where the bytes of `path` at `sha256` are on disk now, or None if they are gone."""
        current = self.root / path
        with self._lock:
            found = self._hash_file(path, str(current))
        if found is not None and found.sha256 == sha256:
            return current
        blob = self._blob_path(sha256)
        return blob if blob.is_file() else None

    # --- scanning ------------------------------------------------------------------------
    def _scan(self) -> dict[str, FileEntry]:
        files: dict[str, FileEntry] = {}
        for path, full in sorted(self._walk(str(self.root), "")):
            entry = self._hash_file(path, full)
            if entry is not None:
                files[path] = entry
        stale = set(self._hashes) - set(files)
        for path in stale:
            del self._hashes[path]
        if self._hashes_dirty or stale:
            self._write_json("hashes.json", self._hashes)
            self._hashes_dirty = False
        return files

    def _walk(self, folder: str, prefix: str) -> Iterator[tuple[str, str]]:
        """(repo path, absolute path) of every file under `folder`, skipping IGNORED_DIRS."""
        with os.scandir(folder) as entries:
            for item in entries:
                if item.is_dir():
                    if not (prefix == "" and item.name in IGNORED_DIRS):
                        yield from self._walk(item.path, f"{prefix}{item.name}/")
                elif item.is_file():
                    yield f"{prefix}{item.name}", item.path

    def _hash_file(self, path: str, full: str) -> FileEntry | None:
        """Hash `full` unless the cache holds a trusted hash for its current stat."""
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        cached = self._hashes.get(path)
        if (
            cached is not None
            and cached[:3] == key
            and int(str(cached[3])) - st.st_mtime_ns > RACY_NS
        ):
            return FileEntry(
                path, st.st_size, str(cached[4]), str(cached[5]), is_lfs(path, st.st_size)
            )
        hashed_at = time.time_ns()
        lfs = is_lfs(path, st.st_size)
        sha256 = hashlib.sha256()
        content = bytearray()
        with open(full, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha256.update(chunk)
                if not lfs:
                    content += chunk
        digest = sha256.hexdigest()
        size = st.st_size if lfs else len(content)
        blob_id = git_blob_id(lfs_pointer(digest, size) if lfs else bytes(content))
        if not lfs:
            self._keep_blob(digest, bytes(content))
        self._hashes[path] = [*key, hashed_at, digest, blob_id]
        self._hashes_dirty = True
        return FileEntry(path, size, digest, blob_id, lfs)

    # --- storage -------------------------------------------------------------------------
    def _write_commit(
        self,
        parent: str | None,
        files: dict[str, FileEntry],
        title: str,
        message: str,
        salt: str = "",
    ) -> Commit:
        commit = Commit(
            id=commit_id(parent, files, salt),
            parent=parent,
            date=hub_date(time.time()),
            title=title,
            message=message,
            files=files,
        )
        self._write_json(f"commits/{commit.id}.json", commit.to_json())
        self._write_json("head.json", {"head": commit.id})
        self._commits[commit.id] = commit
        return commit

    def _read_head(self) -> str | None:
        head = self._read_json("head.json", {}).get("head")
        return str(head) if head else None

    def _blob_path(self, sha256: str) -> Path:
        return self.state_dir / "blobs" / sha256

    def _keep_blob(self, sha256: str, data: bytes) -> None:
        blob = self._blob_path(sha256)
        if not blob.exists():
            durable.write_atomic(blob, data)

    def _load_secret(self) -> bytes:
        path = self.state_dir / "secret"
        if not path.exists():
            durable.write_atomic(path, secrets.token_hex(16).encode())
        return path.read_text().strip().encode()

    def _read_json(self, name: str, default: dict[str, Any]) -> dict[str, Any]:
        path = self.state_dir / name
        if not path.exists():
            return default
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
        return data

    def _write_json(self, name: str, data: object) -> None:
        durable.write_atomic(
            self.state_dir / name, json.dumps(data, separators=(",", ":")).encode()
        )


def _same_content(a: Mapping[str, FileEntry], b: Mapping[str, FileEntry]) -> bool:
    return a.keys() == b.keys() and all(a[p].sha256 == b[p].sha256 for p in a)

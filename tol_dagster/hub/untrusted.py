"""Untrusted Hub answers, checked where they enter, before any value is used in a path.

The Hub (or whatever answers at `TOL_HUB_ENDPOINT`) is not trusted: a sha256 names a partial
file, a path names a mirror file, a commit names a staging folder. Each check returns the value
it accepts or raises `UpstreamInvalid` ("upstream sent an invalid <what>: ...") naming the value
and where it came from.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tol_dagster.errors import UpstreamInvalid

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A commit id: 40 lowercase hex digits, as the Hub's git commits are.
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
#: Longest repo path and file name we accept (the real ones are ~50 characters).
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
#: Largest single file we accept (the real ones are ~1.5 GB).
MAX_FILE_BYTES = 1 << 40
#: Most rows a card may announce for one config (the real dataset has ~2e8).
MAX_ROWS = 10**12
_SHOWN_CHARS = 80


def shown(value: object) -> str:
    """`repr(value)`, truncated: a hostile value may be long."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def invalid(what: str, value: object, where: str) -> UpstreamInvalid:
    return UpstreamInvalid(
        f"upstream sent an invalid {what}: {shown(value)} ({where}); nothing was changed. "
        "The Hub's answer is malformed or hostile: check that TOL_HUB_ENDPOINT is a Hugging Face "
        "Hub, and report it to the dataset's maintainers if it persists"
    )


def check_commit(value: object, where: str) -> str:
    """A commit id: 40 lowercase hex digits, as the Hub's git commits are."""
    if not isinstance(value, str) or not COMMIT_ID.fullmatch(value):
        raise invalid("commit id", value, where)
    return value


def check_sha256(value: object, where: str) -> str:
    """A sha256: 64 lowercase hex digits (it names the partial file of a download)."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise invalid("sha256", value, where)
    return value


def check_size(value: object, where: str) -> int:
    """A file size: a whole number of bytes from 0 to `MAX_FILE_BYTES`."""
    if type(value) is not int or not 0 <= value <= MAX_FILE_BYTES:
        raise invalid("size", value, where)
    return value


def check_rows(value: object, where: str) -> int | None:
    """A row count from the card: None (not said), or a whole number from 0 to `MAX_ROWS`."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_ROWS:
        raise invalid("row count", value, where)
    return value


def check_repo_path(value: object, where: str) -> PurePosixPath:
    """A relative path inside the repo: printable, no `.`/`..`/empty segments, no backslash."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_PATH_CHARS
        or not value.isprintable()
        or "\\" in value
        or value.startswith("/")
        or any(part in ("", ".", "..") for part in value.split("/"))
    ):
        raise invalid("file path", value, where)
    return PurePosixPath(value)


def check_file_name(path: PurePosixPath, where: str) -> str:
    """A file's name as the mirror will hold it: visible (no leading dot) and not too long."""
    name = path.name
    if name.startswith(".") or len(name.encode()) > MAX_NAME_BYTES:
        raise invalid("file path", str(path), where)
    return name

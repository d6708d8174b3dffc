"""What the local Hub is asked and answers: requests, responses, the Hub's errors, byte ranges.

Kept apart from the routes and the sockets so that each answer is a plain value: the API builds
`Reply`s, the HTTP side (`http_server`) writes them, with faults shaping the bytes on the way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the routes see it: the origin ("hub" or "cdn"), the decoded path."""

    origin: str
    method: str
    segments: list[str]  # the URL path's segments, percent-decoded
    query: dict[str, list[str]]
    body: bytes
    headers: Any  # the request's `http.client.HTTPMessage`


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


def error_reply(error: HubError) -> Reply:
    """The Hub's error shape: the status, `X-Error-Code`, `X-Error-Message` and a JSON body."""
    headers = {"Content-Type": "application/json; charset=utf-8", **error.headers}
    if error.code:
        headers["X-Error-Code"] = error.code
    headers["X-Error-Message"] = quote(error.message, safe=" /:=,.'()-_")
    body = json.dumps({"error": error.message}).encode()
    return Reply(error.status, headers, body)


def file_reply(
    source: Path, size: int, etag: str, range_header: str | None, headers: dict[str, str]
) -> Reply:
    """A file's bytes from disk: 200 whole, or 206 for the `Range` asked (416 outside it)."""
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

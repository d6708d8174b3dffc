"""Injected faults and request counters: what tests and benchmarks use to make the Hub misbehave.

A fault matches requests by an fnmatch pattern on the decoded URL path and, optionally, by
request kind; `times` bounds how many requests it affects (None: until cleared).
"""

from __future__ import annotations

import fnmatch
import json
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Request kinds counted by `stats()`; also the values `Fault.request_kind` accepts.
REQUEST_KINDS = (
    "info",
    "refs",
    "commits",
    "tree",
    "paths_info",
    "resolve_head",
    "resolve_get",
    "lfs_get",
    "other",
)
FAULT_KINDS = ("rate_limit", "status", "cut", "delay", "bandwidth", "stall", "rewrite")
#: Faults that shape a response body rather than replace the response.
BODY_FAULTS = ("cut", "bandwidth", "stall", "rewrite")


@dataclass
class Fault:
    """One way to misbehave.

    `rate_limit`: 429 with `Retry-After: retry_after`; `status`: answer `status` (5xx) instead;
    `cut`: announce the full Content-Length, send `after_bytes` of the body, close the
    connection; `delay`: wait `delay_s` before answering; `bandwidth`: send the body at
    `bytes_per_s` at most; `stall`: send `after_bytes` of the body, then nothing for `delay_s`
    with the connection open (then close it); `rewrite`: edit a JSON answer (a hostile Hub):
    `edits` maps a dotted path into the JSON ("0.lfs.oid", "sha"; "-" appends to a list; ""
    is the whole answer) to the value to put there.

    `pattern` sees decoded paths such as `/api/datasets/<repo>/tree/<rev>/<path>`,
    `/datasets/<repo>/resolve/<rev>/<path>` and, on the CDN origin, `/lfs/<sha256>/<path>`;
    `request_kind` (one of REQUEST_KINDS) is often the simpler filter.
    """

    kind: str
    pattern: str = "*"
    request_kind: str | None = None
    times: int | None = None
    retry_after: int = 1
    status: int = 503
    after_bytes: int = 0
    delay_s: float = 0.0
    bytes_per_s: int = 0
    edits: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in FAULT_KINDS:
            problems.append(f"kind={self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.request_kind is not None and self.request_kind not in REQUEST_KINDS:
            problems.append(
                f"request_kind={self.request_kind!r} is not one of {', '.join(REQUEST_KINDS)}"
            )
        if self.times is not None and self.times < 1:
            problems.append(f"times={self.times} must be >= 1 (or None for until cleared)")
        if self.kind == "status" and not 400 <= self.status <= 599:
            problems.append(f"status={self.status} must be an HTTP error status (400-599)")
        if self.kind == "bandwidth" and self.bytes_per_s <= 0:
            problems.append("a bandwidth fault needs bytes_per_s > 0")
        if self.kind == "rewrite" and not self.edits:
            problems.append("a rewrite fault needs edits")
        if min(self.retry_after, self.after_bytes, self.delay_s) < 0:
            problems.append("retry_after, after_bytes and delay_s must be >= 0")
        if problems:
            raise ValueError("invalid local Hub fault: " + "; ".join(problems))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from the JSON body of `POST /_admin/faults`, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, path: str, request_kind: str, has_body: bool) -> bool:
        if self.request_kind is not None and self.request_kind != request_kind:
            return False
        if self.kind in BODY_FAULTS and not has_body:
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


def rewrite_json(body: bytes, edits: dict[str, Any]) -> bytes:
    """`body` (a JSON answer) with each dotted path in `edits` set to its value."""
    data = json.loads(body)
    for dotted, value in edits.items():
        if not dotted:  # the whole answer
            data = value
            continue
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            else:
                node[int(last)] = value
        else:
            node[last] = value
    return json.dumps(data, separators=(",", ":")).encode()


class FaultBook:
    """The active faults; `take` hands out matches and uses up their `times`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, path: str, request_kind: str, has_body: bool) -> list[Fault]:
        """The faults that apply to this request, each counted against its `times`."""
        with self._lock:
            hits = [f for f in self._faults if f.matches(path, request_kind, has_body)]
            for fault in hits:
                if fault.times is not None:
                    fault.times -= 1
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
            return hits


class Stats:
    """Requests and body bytes by kind, plus the 206 answers to Range requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = {
                kind: {"count": 0, "bytes": 0} for kind in (*REQUEST_KINDS, "range_requests")
            }

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind]["count"] += 1

    def add_bytes(self, kind: str, n: int) -> None:
        with self._lock:
            self._counts[kind]["bytes"] += n

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {kind: dict(values) for kind, values in self._counts.items()}

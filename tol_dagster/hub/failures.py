"""A Hub request's failure, judged: worth another attempt, or our `UpstreamError` for the user.

huggingface_hub, httpx and our own checks each raise their own exceptions. The retry loop asks
`transient` whether another attempt may succeed (and how long the server asked us to wait);
`upstream_error` turns a failure no retry can fix into an error of the `UpstreamError` family
(and so into its exit code) that names the request and what to do. Exceptions outside
`HUB_FAILURES` (our own, or local ones such as a full disk) are neither retried nor mapped.
"""

from __future__ import annotations

import json

import httpx2
from huggingface_hub.errors import (
    FileMetadataError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import parse_ratelimit_headers

from tol_dagster.errors import RevisionGone, UpstreamAuthError, UpstreamError
from tol_dagster.hub.origin import origin

#: Statuses worth another try: timeouts, rate limits, server errors.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: What the Hub's side can raise besides transient failures; anything else is not mapped.
HUB_FAILURES = (
    HfHubHTTPError,
    httpx2.HTTPError,
    OfflineModeIsEnabled,
    FileMetadataError,
    json.JSONDecodeError,
)


class TransientFailure(Exception):
    """A failure of our own detection (short body, Range ignored, Xet failed) worth a retry."""


class EntryMissing(UpstreamError):
    """A path that does not exist at the pinned commit."""


def status_of(err: Exception) -> int | None:
    """The HTTP status of the answer that caused `err`, if there was one."""
    response = getattr(err, "response", None)
    return response.status_code if isinstance(response, httpx2.Response) else None


def transient(err: Exception, endpoint: str) -> tuple[str, float | None] | None:
    """(reason, wait the server asked for) when another attempt may succeed, else None.

    A 401/403 from another origin than the Hub's is the CDN refusing a signed URL that has
    expired: the next attempt asks the Hub for a fresh one.
    """
    if isinstance(err, TransientFailure):
        return str(err), None
    if isinstance(err, httpx2.TimeoutException):
        return f"timed out ({type(err).__name__})", None
    if isinstance(err, (httpx2.NetworkError, httpx2.RemoteProtocolError)):
        return f"connection failed ({type(err).__name__})", None
    response = err.response if isinstance(err, HfHubHTTPError) else None
    if response is None:
        return None
    if response.status_code in RETRY_STATUSES:
        return f"HTTP {response.status_code}", _server_wait(response.headers)
    host = origin(str(response.url))
    if response.status_code in (401, 403) and host != origin(endpoint):
        return f"HTTP {response.status_code} from {host[1]}:{host[2]}; asking for a fresh URL", None
    return None


def upstream_error(what: str, err: Exception, endpoint: str, repo_id: str) -> UpstreamError:
    """Our error for a failure retrying cannot fix."""
    status = status_of(err)
    if isinstance(err, RevisionNotFoundError):
        return RevisionGone(
            f"{what}: the revision no longer exists on {endpoint} (force-push or squash upstream); "
            "re-plan against the new head"
        )
    if isinstance(err, RepositoryNotFoundError) or status in (401, 403):
        return UpstreamAuthError(
            f"{what}: {endpoint} refused access to {repo_id} (HTTP {status}). If the repo id is "
            "right, it is gated or private: set HF_TOKEN or run `hf auth login`, and accept the dataset's "
            f"terms on {endpoint}/datasets/{repo_id}"
        )
    if isinstance(err, RemoteEntryNotFoundError):
        return EntryMissing(f"{what}: not found on {endpoint}")
    if status is not None:
        return UpstreamError(f"{what}: {endpoint} answered HTTP {status}, which a retry cannot fix")
    return UpstreamError(
        f"{what}: {endpoint} answered in a way we cannot use ({type(err).__name__}); "
        "check that the endpoint is a Hugging Face Hub"
    )


def _server_wait(headers: httpx2.Headers) -> float | None:
    """The wait the server asks for: `RateLimit` when the quota is spent, else `Retry-After`."""
    limit = parse_ratelimit_headers(headers)
    if limit is not None and limit.remaining == 0:
        return float(limit.reset_in_seconds)
    retry_after = headers.get("Retry-After", "").strip()
    return float(retry_after) if retry_after.isdigit() else None

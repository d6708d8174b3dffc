"""Where a request goes decides what it carries: the token goes only to the Hub's own origin.

The Hub hands out links that may lead elsewhere (a listing's next page, a file's bytes on a CDN).
Every request's headers are built here, with the token only for the endpoint's origin, so the
token never leaves the Hub whichever link it sent; it never enters a message or a log line either.
"""

from __future__ import annotations

from urllib.parse import urlparse

from huggingface_hub.utils import build_hf_headers

from tol_dagster import __version__

#: The name our requests announce to the Hub (its user agent), with `__version__`.
LIBRARY = "tol-dagster"


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: equal tuples, one origin."""
    parsed = urlparse(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port or default


def request_headers(token: str | bool, *, to_hub: bool) -> dict[str, str]:
    """The client's headers; the token only when the request goes to the Hub's own origin.

    `token` False (not None) keeps huggingface_hub from sending a token it saved on its own.
    """
    return build_hf_headers(
        token=token if to_hub else False,
        library_name=LIBRARY,
        library_version=__version__,
    )

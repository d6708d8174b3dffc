"""The Hub's tree listing of a config folder, read: each page's entries checked into `RemoteFile`s.

The listing is untrusted. An entry's path, size and sha256 (`lfs.oid` here, unlike dataset_info's
`lfs.sha256`) are checked (`hub.untrusted`) before they name anything; the config's files are the
parquet files directly in `<config>/`, and everything else (folders, other files, entries outside
the folder) is skipped, never taken for a removal. A page's link to the next one must stay on
the Hub's origin, because the next page is fetched with the token.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin

import httpx2

from tol_dagster.errors import UpstreamError
from tol_dagster.hub.origin import origin
from tol_dagster.hub.remote import RemoteFile
from tol_dagster.hub.untrusted import (
    check_file_name,
    check_repo_path,
    check_sha256,
    check_size,
    invalid,
)


def page_entries(response: httpx2.Response, where: str) -> list[Any]:
    """A listing page's JSON, which must be a list."""
    try:
        data = response.json()
    except ValueError:
        raise invalid("listing (not JSON)", response.text[:200], where) from None
    if not isinstance(data, list):
        raise invalid("listing (not a list)", data, where)
    return data


def parquet_file(entry: object, config: str, repo_id: str, commit: str) -> RemoteFile | None:
    """The parquet file a tree entry announces directly in `config/`, checked; None for
    anything else (folders, other files, entries outside the folder: never removals)."""
    where = f"tree of {config}/ in {repo_id}@{commit[:12]}"
    if not isinstance(entry, dict):
        raise invalid("tree entry", entry, where)
    path = check_repo_path(entry.get("path"), where)
    if entry.get("type") != "file":
        return None
    if path.parent != PurePosixPath(config) or path.suffix != ".parquet":
        return None
    check_file_name(path, where)
    where = f"{path} in {repo_id}@{commit[:12]}"
    lfs = entry.get("lfs")
    if lfs is None:
        raise UpstreamError(
            f"{path} at commit {commit[:12]} is not an LFS file, so the Hub gives no sha256 for it"
        )
    if not isinstance(lfs, dict):
        raise invalid("LFS record", lfs, where)
    size = check_size(lfs.get("size"), where)
    return RemoteFile(str(path), size, check_sha256(lfs.get("oid"), where))


def next_page(response: httpx2.Response, endpoint: str, where: str) -> str | None:
    """The listing's next page, which must stay on the Hub's origin (it gets the token)."""
    link = response.links.get("next", {}).get("url")
    if link is None:
        return None
    url = urljoin(str(response.url), link)
    if origin(url) != origin(endpoint):
        raise invalid("next-page link", link, f"not on {endpoint}; {where}")
    return url

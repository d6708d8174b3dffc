"""A local, Hub-compatible server for development and tests. It is not a Hub.

It serves one folder as a dataset repo so that the real `huggingface_hub` client works
against it with `endpoint=`: dataset info with the card's YAML, refs, commit history, tree
listings and paths-info, `/resolve` with LFS files behind a 302 to a second ("CDN") origin,
byte ranges, the Hub's error codes, an optional required token (answered as a gated repo),
and injectable faults (429, 5xx, cut bodies, delays, bandwidth caps) with request counters
for tests and benchmarks. Commits are derived from the folder's content, so editing a file
is an upstream change and restarting the server is not.

    with LocalHub(root) as hub:
        HfApi(endpoint=hub.endpoint).dataset_info(hub.repo_id)

From a shell: `tol-dagster hub serve ROOT [--port P] [--repo-id ID] [--token T]` (or
`python -m tol_dagster.devtools.localhub ROOT ...`); the first stdout line is `endpoint=<url>`.
Control API on the Hub origin (no token needed): `GET /_admin/stats`, `GET /_admin/faults`,
`POST /_admin/faults` (a Fault as JSON, or a list), `POST /_admin/reset`,
`POST /_admin/force-push`.
"""

from __future__ import annotations

from tol_dagster.devtools.localhub.faults import FAULT_KINDS, REQUEST_KINDS, Fault
from tol_dagster.devtools.localhub.server import LocalHub, serve_forever

__all__ = ["FAULT_KINDS", "REQUEST_KINDS", "Fault", "LocalHub", "serve_forever"]

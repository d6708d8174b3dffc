"""`python -m tol_dagster.devtools.localhub ROOT [--port P] [--repo-id ID] [--token T]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from tol_dagster.devtools.localhub.server import serve_forever
from tol_dagster.settings import DEFAULT_REPO_ID

parser = argparse.ArgumentParser(
    prog="python -m tol_dagster.devtools.localhub", description=__doc__
)
parser.add_argument("root", type=Path, help="folder to serve as the dataset repo")
parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
parser.add_argument("--repo-id", default=DEFAULT_REPO_ID)
parser.add_argument("--token", default=None, help="require this token (answered as a gated repo)")
args = parser.parse_args()
serve_forever(args.root, port=args.port, repo_id=args.repo_id, token=args.token)

"""How much a command says: `--verbose`, `--quiet`, `--json` (process state of the command line).

Default: a progress bar (on a terminal) or plain progress lines, then a short report. `--quiet`:
errors only. `--json`: one JSON document on stdout and nothing else there (errors on stderr
too). `--verbose` (or TOL_DEBUG=1): Dagster's own log lines, its failure events and our
tracebacks as well. The product never reads this; the run's event log keeps everything.
"""

from __future__ import annotations

import os

_verbose = False
_quiet = False
_json = False


def set_verbose(on: bool) -> None:
    """`tol-dagster --verbose`: print tracebacks and Dagster's log lines too."""
    global _verbose
    _verbose = on


def set_output(*, quiet: bool, as_json: bool) -> None:
    """`--quiet` (errors only) and `--json` (one document on stdout)."""
    global _quiet, _json
    _quiet, _json = quiet, as_json


def verbose() -> bool:
    """True under `--verbose` or TOL_DEBUG set to anything but "" or "0"."""
    return _verbose or os.environ.get("TOL_DEBUG", "") not in ("", "0")


def as_json() -> bool:
    """`--json`: the command prints one JSON document on stdout, no report, no progress."""
    return _json


def chatty() -> bool:
    """Progress and the final report are shown: neither `--quiet` nor `--json`."""
    return not (_quiet or _json)

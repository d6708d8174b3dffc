"""`--verbose` (or TOL_DEBUG=1): whether a command prints tracebacks and Dagster's failure events.

Process state of the command line only: the product never reads it. Without it the terminal
shows one line naming the cause and the fix; the run's event log keeps everything either way.
"""

from __future__ import annotations

import os

_verbose = False


def set_verbose(on: bool) -> None:
    """`tol-dagster --verbose`: print tracebacks and Dagster's failure events too."""
    global _verbose
    _verbose = on


def verbose() -> bool:
    """True under `--verbose` or TOL_DEBUG set to anything but "" or "0"."""
    return _verbose or os.environ.get("TOL_DEBUG", "") not in ("", "0")

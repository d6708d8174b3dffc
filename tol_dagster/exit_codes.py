"""Every failure mapped to one public exit code and one line that names the cause and the fix.

Our own errors (`TolError`) carry their code. Foreign exceptions are classified here, in one
place: local storage (OSError ENOSPC/EDQUOT/EROFS/EACCES/EPERM, SQLite "disk I/O error") is 4,
network errors are 3, interrupts 130/143, and anything else is a bug: 70, with the Dagster run
id to report. A failure inside a Dagster step only survives as `SerializableErrorInfo` (class
name, message, cause chain), so the same rules run on the class found by name.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import shutil
import signal
import sqlite3
from pathlib import Path

import httpx2
import huggingface_hub.errors as hf_errors

from tol_dagster import errors
from tol_dagster.errors import INTERNAL_EXIT_CODE, Interrupted, TolError

#: What each exit code says happened (the command line's and the failures' one wording).
VERDICTS = {
    1: "the gate refused the new state",
    2: "bad input or settings",
    3: "upstream or a service (Celery broker, PostgreSQL) unreachable, or an invalid answer",
    4: "local storage failed",
    INTERNAL_EXIT_CODE: "internal error",
}

#: errno values that mean "local storage refused": full, over quota, read-only, not allowed,
#: a file where a folder should be.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)
_SQLITE_STORAGE = ("disk i/o error", "database or disk is full", "readonly database")
_ERRNO = re.compile(r"\[Errno (\d+)\]")
_FILENAME = re.compile(r"\[Errno \d+\] [^:]*: '(.+?)'(?: -> '.+')?\s*$")

#: Storage errors raised with the bytes needed, oldest first: when Dagster's own storage then
#: fails on the same full disk, this first, precise cause is what the user reads.
_raised: list[errors.LocalStorageError] = []


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk holding `path` (its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def storage_error(
    path: Path | str | None, reason: str, *, needed: int | None = None
) -> errors.LocalStorageError:
    """Exit 4, naming the path, the bytes needed (when known) and the bytes free there."""
    where = Path(path) if path else Path(os.environ.get("TOL_HOME") or ".")
    free = free_bytes(where)
    needed_text = f"{needed:,} bytes needed" if needed is not None else "bytes needed unknown"
    free_text = f"{free:,} bytes free" if free is not None else "free space unknown"
    error = errors.LocalStorageError(
        f"local storage failed at {where}: {reason} ({needed_text}, {free_text} there); "
        "free space or fix the folder's permissions (or set TOL_HOME / DAGSTER_HOME to a "
        "writable disk with room), then run the command again"
    )
    if needed is not None:
        _raised.append(error)
    return error


def storage_mark() -> int:
    """A point to ask `storage_error_since` about."""
    return len(_raised)


def storage_error_since(mark: int) -> errors.LocalStorageError | None:
    """The first storage error with bytes needed raised in this process since `mark`."""
    return _raised[mark] if len(_raised) > mark else None


def dagster_storage() -> Path:
    """Where Dagster's SQLite storage lives (DAGSTER_HOME), to name it when it fails."""
    return Path(os.environ.get("DAGSTER_HOME") or ".")


def classify(exc: BaseException, *, run_id: str | None = None) -> TolError:
    """The `TolError` that stands for `exc` (itself if it is one)."""
    if isinstance(exc, TolError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return interrupted(signal.SIGINT, run_id)
    cause = _unwrap(exc)
    if cause is not exc:
        return classify(cause, run_id=run_id)
    message = str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    return _by_class(type(exc), message, getattr(exc, "errno", None), filename, run_id)


def classify_error_info(info: object, *, run_id: str | None) -> TolError | None:
    """The same rules on a Dagster `SerializableErrorInfo`; None for a failed blocking check
    (the check's own evaluation explains it)."""
    while getattr(info, "cause", None) is not None and str(
        getattr(info, "cls_name", "")
    ).startswith("Dagster"):
        info = info.cause  # type: ignore[attr-defined]
    cls_name = str(getattr(info, "cls_name", "") or "")
    if cls_name == "DagsterAssetCheckFailedError":
        return None
    message = str(getattr(info, "message", "")).strip()
    prefix = re.match(r"^(?:([\w.]+)\.)?" + re.escape(cls_name) + r": ", message)
    module = prefix.group(1) if prefix else None
    if prefix:
        message = message[prefix.end() :]
    if cls_name in ("KeyboardInterrupt", "DagsterExecutionInterruptedError"):
        return interrupted(signal.SIGINT, run_id)
    found = _ERRNO.search(message)
    filename = _FILENAME.search(message)
    return _by_class(
        _class_named(cls_name, module),
        message or cls_name,
        int(found.group(1)) if found else None,
        filename.group(1) if filename else None,
        run_id,
    )


def interrupted(signum: int, run_id: str | None) -> Interrupted:
    """130/143, naming the signal and the run marked canceled; nothing published changed."""
    name = signal.Signals(signum).name
    run = f"run {run_id} was marked canceled; " if run_id else ""
    return Interrupted(
        f"interrupted by {name}: {run}the published mirror and slices are unchanged; run the "
        "command again to resume (fetched bytes are kept)",
        signum,
    )


def internal(message: str, run_id: str | None) -> errors.InternalError:
    """70: a bug; the message says what to report it with (the run id, or the --verbose output)."""
    report = (
        f"please report it with run id {run_id} (its event log in the Dagster UI has the trace)"
        if run_id
        else "please report it with the output of the same command run with --verbose"
    )
    return errors.InternalError(f"internal error (a bug in tol-dagster): {message}; {report}")


def _by_class(
    kind: type | None,
    message: str,
    errno_value: int | None,
    filename: str | None,
    run_id: str | None,
) -> TolError:
    if kind is Interrupted:
        return interrupted(signal.SIGINT, run_id)
    if kind is not None and issubclass(kind, TolError):
        error = kind.__new__(kind)
        Exception.__init__(error, message)
        return error
    if kind is not None and issubclass(kind, OSError) and errno_value in STORAGE_ERRNOS:
        return storage_error(filename, os.strerror(errno_value or 0))
    if (
        kind is not None
        and issubclass(kind, sqlite3.Error)
        and any(text in message.lower() for text in _SQLITE_STORAGE)
    ):
        return storage_error(dagster_storage(), f"Dagster's SQLite storage: {message}")
    if kind is not None and _is_network(kind):
        return errors.UpstreamError(
            f"the Hub could not be reached or answered badly ({kind.__name__}: {message}); "
            "check the network and TOL_HUB_ENDPOINT, then run the command again"
        )
    name = kind.__name__ if kind is not None else "error"
    return internal(f"{name}: {message}", run_id)


def _unwrap(exc: BaseException) -> BaseException:
    """The exception inside Dagster's wrappers (`DagsterExecutionStepExecutionError`) and
    SQLAlchemy's (`OperationalError.orig`, the sqlite3 error)."""
    while type(exc).__module__.startswith(("dagster", "sqlalchemy")):
        inner = getattr(exc, "user_exception", None) or getattr(exc, "orig", None) or exc.__cause__
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


def _is_network(kind: type) -> bool:
    return issubclass(
        kind, (httpx2.HTTPError, hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled)
    )


def _class_named(name: str, module: str | None = None) -> type | None:
    """An exception class found by its name where failures come from, of `module` when the
    message names it: pydantic's `ValidationError` (a run config refused) is not the Hub
    client's, which is an HTTP error (exit 3)."""
    for where in (errors, builtins, sqlite3, httpx2, hf_errors):
        found = getattr(where, name, None)
        is_error = isinstance(found, type) and issubclass(found, BaseException)
        if is_error and module in (None, found.__module__):
            return found
    return None


__all__ = [
    "INTERNAL_EXIT_CODE",
    "STORAGE_ERRNOS",
    "VERDICTS",
    "classify",
    "classify_error_info",
    "internal",
    "interrupted",
    "storage_error",
    "storage_error_since",
    "storage_mark",
]

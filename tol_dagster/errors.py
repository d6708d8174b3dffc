"""The errors users see. Each names the thing at fault and how to fix it.

The command line exits with each error's `exit_code`, so scripts can tell "the gate refused"
(1) from "bad input" (2), "upstream unreachable" (3), "local storage" (4), "interrupted"
(130/143) and "a bug" (70). `tol_dagster.exit_codes` classifies foreign exceptions into these.
"""

from __future__ import annotations


class TolError(Exception):
    """Base of every error tol-dagster raises on purpose."""

    exit_code = 2

    def details(self) -> dict[str, object]:
        """Facts beside the message, for a program (Dagster shows them as the failure's metadata)."""
        return {}


class SettingsError(TolError):
    """A setting (environment variable or option) has a value we cannot use."""

    exit_code = 2


class SliceSpecError(TolError):
    """A slice key is malformed or names an unknown rank."""

    exit_code = 2


class EmptySliceError(SliceSpecError):
    """A slice key whose taxon has no rows in the mirror (a misspelling, most often): refused
    unless an empty slice is asked for. `matches` are close names from the taxon index."""

    exit_code = 2

    def __init__(self, message: str, matches: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.matches = matches

    def details(self) -> dict[str, object]:
        return {"close_matches": list(self.matches)}


class UpstreamError(TolError):
    """The Hub could not be reached or answered in a way we cannot use."""

    exit_code = 3


class UpstreamAuthError(UpstreamError):
    """The repo is gated or private and our token is missing or refused."""

    exit_code = 3


class UpstreamInvalid(UpstreamError):
    """The Hub answered with a value we will not use (a path, sha256, size or commit id that is
    malformed or hostile); nothing was changed."""

    exit_code = 3


class RevisionGone(UpstreamError):
    """The commit a sync was pinned to no longer exists upstream (force-push, squash)."""


class IntegrityError(UpstreamError):
    """Downloaded bytes do not match the sha256 or size the Hub announced."""


class ServiceUnreachable(TolError):
    """A service the run needs is down: the Celery broker, the instance's PostgreSQL."""

    exit_code = 3


class LocalStorageError(TolError):
    """Local storage failed us: a full disk, a read-only folder, missing permissions."""

    exit_code = 4


class DiskSpaceError(LocalStorageError):
    """Not enough free disk for the bytes a sync is about to fetch."""

    exit_code = 4


class Interrupted(TolError):
    """A signal (Ctrl-C, SIGTERM) stopped the command; its run is marked canceled."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


#: The exit code of a bug: sysexits.h's EX_SOFTWARE.
INTERNAL_EXIT_CODE = 70


class InternalError(TolError):
    """An exception we did not foresee: a bug, to report with the run id."""

    exit_code = INTERNAL_EXIT_CODE


class ValidationFailed(TolError):
    """The validation gate refused a new state; the published mirror is untouched."""

    exit_code = 1


class StoreError(TolError):
    """The local store or mirror is in a state we will not read or overwrite (corrupt, hand-made)."""

    exit_code = 2


class SliceNotPublished(TolError):
    """A slice was asked for by key but is not in the catalog (or its file is gone)."""

    exit_code = 2


class ResyncConflict(TolError):
    """Another resync of the same config published between this run's staging and publishing.

    Resyncs of one config are serialized (`tol_dagster.defs.mirror.resync_slot`), so this
    means the serialization was bypassed: nothing is published, and a new sync starts from the
    mirror as it is now.
    """

    exit_code = 70

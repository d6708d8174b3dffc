"""How hard to try: the retry policy, and the one loop every Hub request runs in.

huggingface_hub retries unevenly (listings with backoff, blob GETs only on 408/429, metadata
calls never) and sets no timeout on some calls. Here every request runs in one loop, with the
client's own retries off, so a request is never retried twice over nor counted twice:

- backoff, or the wait the server asks for (`Retry-After`, `RateLimit: ...;r=0;t=N`), capped at
  `TOL_MAX_RETRY_WAIT_S` so one answer cannot stall a sync for a day;
- 429s counted against a budget of their own, so a busy Hub does not use up the retries meant
  for a failing one;
- a download that receives no bytes for `TOL_STALL_TIMEOUT_S` fails;
- an overall deadline (`TOL_SYNC_DEADLINE_S`) that also shortens every request's timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tol_dagster.errors import SettingsError, UpstreamError
from tol_dagster.hub import failures

logger = logging.getLogger("tol_dagster.hub.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: total attempts per request, exponential backoff, per-request timeout.

    A wait the server asks for (`Retry-After`, `RateLimit` with r=0) replaces the backoff delay,
    capped at `max_server_wait_s`, so one answer cannot stall a sync for a day. Rate limiting
    (429) is counted against `rate_limit_attempts`, apart from `attempts`: a busy Hub must not
    use up the retries meant for a failing one. A download that receives no bytes for
    `stall_timeout_s` fails; `deadline_s` (None: none) bounds what one client does, counted
    from its `started` time (the run's start).
    """

    attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 60.0
    max_server_wait_s: float = 300.0
    rate_limit_attempts: int = 10
    stall_timeout_s: float = 120.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if (
            self.attempts < 1
            or self.rate_limit_attempts < 1
            or self.base_delay_s < 0
            or self.max_delay_s < 0
            or self.max_server_wait_s < 0
            or self.timeout_s <= 0
            or self.stall_timeout_s <= 0
            or (self.deadline_s is not None and self.deadline_s <= 0)
        ):
            raise SettingsError(
                f"{self} is not a usable retry policy: attempts >= 1, delays >= 0, "
                "timeouts and deadline > 0"
            )

    def backoff(self, failures: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failures - 1))


#: For a question whose answer can wait for the next time it is asked (a sensor's tick, the
#: audit's note on upstream, `tol-dagster status`): one quick retry, and a 429 gets one short
#: wait at most, whatever the server asks. The default policy (6 attempts, backoff to 30 s)
#: held a sensor tick for 31 s against a Hub that was down, and longer than the daemon's tick
#: timeout against one that hangs.
QUICK_RETRY = RetryPolicy(
    attempts=2,
    base_delay_s=0.5,
    max_delay_s=0.5,
    timeout_s=10.0,
    max_server_wait_s=5.0,
    rate_limit_attempts=2,
)


class Activity:
    """When a download last received bytes (or was told by the server to wait)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


@dataclass
class _Tries:
    """What one request has used of its policy: failures, 429s, and every attempt's reason."""

    failures: int = 0
    rate_limited: int = 0
    reasons: list[str] = field(default_factory=list)


class Retrier:
    """Runs one client's requests under its policy and deadline. Safe to share between threads:
    its only state, the deadline, is fixed when it is made."""

    def __init__(
        self, policy: RetryPolicy, endpoint: str, repo_id: str, *, started: float | None
    ) -> None:
        """`started` (epoch seconds, None: now) is when the deadline's clock started."""
        self.policy = policy
        self.endpoint = endpoint
        self.repo_id = repo_id
        self._deadline: float | None = None
        if policy.deadline_s is not None:
            spent = max(0.0, time.time() - started) if started is not None else 0.0
            self._deadline = time.monotonic() + policy.deadline_s - spent

    def run(
        self,
        what: str,
        call: Callable[[], T],
        *,
        progress: Callable[[], int] | None = None,
        activity: Activity | None = None,
    ) -> T:
        """Run `call` until it succeeds, retrying transient failures per the policy.

        With `progress`, an attempt that moved it forward does not count against the policy: a
        download cut again and again keeps going while bytes keep arriving. With `activity`, a
        failure after `stall_timeout_s` without a byte ends the download instead.
        """
        tries = _Tries()
        while True:
            self.check_deadline(what)
            before = progress() if progress else 0
            try:
                return call()
            except Exception as err:
                transient = failures.transient(err, self.endpoint)
                if transient is None:
                    if not isinstance(err, failures.HUB_FAILURES):
                        raise  # ours, or local (a full disk is no upstream error)
                    raise failures.upstream_error(what, err, self.endpoint, self.repo_id) from err
                reason, asked = transient
                tries.reasons.append(reason)
                if progress and progress() > before:
                    tries.failures = tries.rate_limited = 0
                if activity is not None:
                    self._check_stall(what, activity)
                count, budget = self._count(what, err, asked, tries)
                wait = self._wait(what, asked, count)
                logger.warning(
                    "%s: %s; retry %d of %d in %.2f s%s",
                    what,
                    reason,
                    count,
                    budget - 1,
                    wait,
                    " (as the server asked)" if asked is not None else "",
                )
                time.sleep(wait)
                if activity is not None:
                    activity.touch()  # our pause between attempts is not the server stalling

    def timeout(self) -> float:
        """The per-request timeout, shortened so no request outlives the deadline."""
        if self._deadline is None:
            return self.policy.timeout_s
        return max(0.001, min(self.policy.timeout_s, self._deadline - time.monotonic()))

    def check_deadline(self, what: str) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise self._past_deadline(what, "")

    def _count(
        self, what: str, err: Exception, asked: float | None, tries: _Tries
    ) -> tuple[int, int]:
        """Count a transient failure against its budget: (this retry's number, the budget).
        Raises when the budget is spent."""
        if failures.status_of(err) == 429:
            tries.rate_limited += 1
            if tries.rate_limited >= self.policy.rate_limit_attempts:
                raise self._rate_limited(what, tries.rate_limited, asked) from err
            return tries.rate_limited, self.policy.rate_limit_attempts
        tries.failures += 1
        if tries.failures >= self.policy.attempts:
            raise UpstreamError(
                f"{what} on {self.endpoint} failed after {len(tries.reasons)} attempts "
                f"({', '.join(tries.reasons[-self.policy.attempts :])}): check the network and "
                "the Hub's status, then run the command again"
            ) from err
        return tries.failures, self.policy.attempts

    def _wait(self, what: str, asked: float | None, count: int) -> float:
        """The pause before the next attempt: the server's wait capped, else the backoff; never
        past the deadline."""
        if asked is None:
            wait = self.policy.backoff(count)
        else:
            wait = min(asked, self.policy.max_server_wait_s)
            if wait < asked:
                logger.warning(
                    "%s: the server asked to wait %.0f s; waiting %.0f s (TOL_MAX_RETRY_WAIT_S)",
                    what,
                    asked,
                    wait,
                )
        if self._deadline is not None and time.monotonic() + wait > self._deadline:
            raise self._past_deadline(what, f"the next retry is {wait:.0f} s away")
        return wait

    def _rate_limited(self, what: str, times: int, asked: float | None) -> UpstreamError:
        told = f"; it last asked to wait {asked:.0f} s" if asked is not None else ""
        return UpstreamError(
            f"{what}: {self.endpoint} rate-limited us (HTTP 429) {times} times in a row{told}, "
            f"each wait capped at {self.policy.max_server_wait_s:.0f} s (TOL_MAX_RETRY_WAIT_S): "
            "wait for the Hub's quota to reset and sync again, or raise TOL_MAX_RETRY_WAIT_S"
        )

    def _check_stall(self, what: str, activity: Activity) -> None:
        """Fail a download that has received nothing for the stall timeout (a small margin
        allows for the read timeout firing a hair early)."""
        idle = time.monotonic() - activity.last
        if idle + 0.05 >= self.policy.stall_timeout_s:
            raise UpstreamError(
                f"{what}: stalled, no bytes received from {self.endpoint} for {idle:.0f} s "
                f"(TOL_STALL_TIMEOUT_S={self.policy.stall_timeout_s:g}): check the network and the "
                "Hub's status, then sync again (the download resumes), or raise TOL_STALL_TIMEOUT_S"
            )

    def _past_deadline(self, what: str, detail: str) -> UpstreamError:
        detail = f" ({detail})" if detail else ""
        return UpstreamError(
            f"{what}: the sync's deadline of {self.policy.deadline_s:g} s (TOL_SYNC_DEADLINE_S) "
            f"has passed{detail}; sync again (downloads resume), or raise or unset "
            "TOL_SYNC_DEADLINE_S"
        )

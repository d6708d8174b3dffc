"""Calls started at the same instant, as processes racing on a shared store or database would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


def at_the_same_instant(calls: Sequence[Callable[[], object]]) -> list[BaseException]:
    """Run `calls` on threads released together by a barrier; what each raised (none: [])."""
    together = threading.Barrier(len(calls))
    failures: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        together.wait()
        try:
            call()
        except BaseException as error:  # the thread's failure is the caller's to judge
            failures.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return failures

"""Spying on which way a call went: whether each call of a function returned something."""

from __future__ import annotations

from typing import Any

import pytest


def returned_something(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[bool]:
    """From now on, whether each call of `owner.name` returned something other than None (the
    fast path taken) or None (left to the fallback); the calls still return what they did."""
    calls: list[bool] = []
    real = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(owner, name, spy)
    return calls

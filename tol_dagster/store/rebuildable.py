"""Small JSON files one run keeps for the next that the next can do without: a file's gate facts,
what a derived table was built from, upstream's last observed state, the last revision's diff.

Read damaged (a disk's fault, a hand edit), each is taken for never written, so what writes it
computes it again, instead of failing as a bug: the facts are recomputed from the file, a derived
table is rebuilt whole, upstream is asked again. Each damaged read is logged with its path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_log = logging.getLogger(__name__)


def read_rebuildable(path: Path, parse: Callable[[str], T], *, drop: bool = False) -> T | None:
    """`parse` of the text of the file at `path`; None when the file is missing, or damaged:
    not UTF-8, or text that `parse` refuses (ValueError, as for JSON that does not parse;
    KeyError, TypeError or AttributeError, as for a document of another shape). `drop`: a
    damaged file is removed too, for a cache whose writer checks only that it exists."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        _log.warning("%s is damaged (%s): it is computed again", path, error)
        if drop:
            with contextlib.suppress(OSError):
                path.unlink()
        return None

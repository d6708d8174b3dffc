"""JSON documents of the store that carry the sha256 of the rest of themselves.

The manifest and the generation records are facts later runs act on (which bytes a file
holds). A byte changed on disk that still parses, one digit of a sha256, was taken for a fact:
every sync then stopped on a file "changed on disk" that had not, and told the user to sync
again. With its checksum such a document reads as damaged, which its reader already handles.
A document without one (written before it was added) is read as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: The key holding the sha256 of the document's other keys, as `dumps` writes them.
CHECKSUM_KEY = "sha256_of_the_rest"


def dumps(document: Mapping[str, Any]) -> str:
    """`document` as indented JSON, its checksum last."""
    return json.dumps({**document, CHECKSUM_KEY: _digest(document)}, indent=1) + "\n"


def loads(text: str) -> Any:
    """The document in `text`, without its checksum; ValueError if the checksum does not match
    the rest (a byte changed since it was written)."""
    document = json.loads(text)
    if isinstance(document, dict) and CHECKSUM_KEY in document:
        claimed = document.pop(CHECKSUM_KEY)
        if claimed != _digest(document):
            raise ValueError("its checksum does not match its content: a byte changed on disk")
    return document


def _digest(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, indent=1).encode()).hexdigest()

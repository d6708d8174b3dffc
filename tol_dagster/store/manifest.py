"""The durable manifest of a config's published mirror.

The manifest says what the published generation holds (each file's sha256, size, rows, the
commit it came from and when it passed the gate). The resync's plan diffs it against the remote
listing by sha256 (`tol_dagster.resync.plan`), which makes an in-sync check free: unchanged files
cost no request at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from tol_dagster.errors import StoreError
from tol_dagster.store import checked_json
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.layout import Layout

#: Bumped when the file's shape changes; an unknown format is refused, not guessed at.
MANIFEST_FORMAT = 1


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC to the second (`2026-01-02T03:04:05Z`): the form every `validated_at` uses."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def schema_to_json(schema: pa.Schema) -> str:
    """Serialize a schema exactly (Arrow IPC, base64) with a readable field list beside it.

    Equal schemas give equal text, so the gate can compare the text; `schema_from_json` gives
    the exact `pa.Schema` back for a readable diff.
    """
    fields = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
    ipc = base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")
    return json.dumps({"fields": fields, "ipc": ipc}, sort_keys=True, separators=(",", ":"))


def schema_from_json(text: str) -> pa.Schema:
    """The exact schema `schema_to_json` wrote."""
    ipc = base64.b64decode(json.loads(text)["ipc"], validate=True)
    return pa.ipc.read_schema(pa.py_buffer(ipc))


@dataclass(frozen=True)
class ManifestEntry:
    """One published file: its content identity and when it passed the gate."""

    name: str
    path: str  # the repo path, e.g. "bioclip-2_float16/train-00000-of-00666.parquet"
    sha256: str
    size: int
    rows: int
    upstream_commit: str  # the commit these bytes were fetched at
    validated_at: str  # see `utc_timestamp`


@dataclass(frozen=True)
class Manifest:
    """What the published generation of one config holds; `entries` sorted by name."""

    config: str
    repo_id: str
    upstream_commit: str
    generation: str  # the generation folder's name, see `generations.publish_generation`
    card_expected_rows: int | None
    schema_json: str | None  # see `schema_to_json`: the last validated schema
    validated_at: str
    entries: tuple[ManifestEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.name)))

    @property
    def total_rows(self) -> int:
        return sum(entry.rows for entry in self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def by_name(self) -> dict[str, ManifestEntry]:
        return {entry.name: entry for entry in self.entries}

    @property
    def schema(self) -> pa.Schema | None:
        return None if self.schema_json is None else schema_from_json(self.schema_json)

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "config": self.config,
            "repo_id": self.repo_id,
            "upstream_commit": self.upstream_commit,
            "generation": self.generation,
            "card_expected_rows": self.card_expected_rows,
            "validated_at": self.validated_at,
            "total_rows": self.total_rows,
            # Stored as an object, not a string in a string, so a person can read the file.
            "schema": None if self.schema_json is None else json.loads(self.schema_json),
            "files": [vars(entry) for entry in self.entries],
        }
        return checked_json.dumps(document)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and type-check a manifest; raises ValueError, KeyError, TypeError (or Arrow's
        OSError for a damaged schema) if malformed."""
        document = checked_json.loads(text)
        if not isinstance(document, dict):
            raise TypeError(f"expected a JSON object, found {type(document).__name__}")
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"unknown format {document.get('format')!r}, expected {MANIFEST_FORMAT}"
            )
        schema = document["schema"]
        entries = tuple(
            ManifestEntry(
                name=_typed(item, "name", str),
                path=_typed(item, "path", str),
                sha256=_typed(item, "sha256", str),
                size=_typed(item, "size", int),
                rows=_typed(item, "rows", int),
                upstream_commit=_typed(item, "upstream_commit", str),
                validated_at=_typed(item, "validated_at", str),
            )
            for item in document["files"]
        )
        expected_rows = document["card_expected_rows"]
        manifest = cls(
            config=_typed(document, "config", str),
            repo_id=_typed(document, "repo_id", str),
            upstream_commit=_typed(document, "upstream_commit", str),
            generation=_typed(document, "generation", str),
            card_expected_rows=None
            if expected_rows is None
            else _typed(document, "card_expected_rows", int),
            schema_json=None
            if schema is None
            else json.dumps(schema, sort_keys=True, separators=(",", ":")),
            validated_at=_typed(document, "validated_at", str),
            entries=entries,
        )
        if len(manifest.by_name) != len(entries):
            raise ValueError("a file name appears twice")
        if manifest.schema_json is not None:
            schema_from_json(manifest.schema_json)
        return manifest


def _typed(document: Mapping[str, Any], key: str, kind: type) -> Any:
    value = document[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key!r} should be {kind.__name__}, found {value!r}")
    return value


def load_manifest(layout: Layout, config: str) -> Manifest | None:
    """The config's manifest, or None before its first sync. A damaged file raises `StoreError`."""
    path = layout.manifest_path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = Manifest.from_json(text)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # JSON and Arrow errors among them
        raise StoreError(
            f"the manifest {path} is unreadable ({type(exc).__name__}: {exc}). It is only ever "
            "replaced whole, so it was edited or damaged outside tol-dagster. Restore it from a "
            "backup, or delete it and run `tol-dagster sync` to rebuild it (the published mirror "
            "stays as it is until the new sync passes the gate; its files are fetched again)."
        ) from exc
    if manifest.config != config:
        raise StoreError(
            f"the manifest {path} describes config {manifest.config!r}, not {config!r}. "
            "Move it back to the store of its own config, or delete it and run `tol-dagster sync`."
        )
    return manifest


def save_manifest(layout: Layout, manifest: Manifest) -> None:
    """Replace the manifest durably: a crash at any instant leaves the old or the new one, whole."""
    write_atomic(layout.manifest_path(manifest.config), manifest.to_json().encode("utf-8"))

"""The per-file facts of a staged or published file: its own checks, cached by content.

Each file is inspected once, as soon as it lands (pipelined with the other downloads); the gate
then combines the cached facts of every file of the candidate with cheap cross-file facts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.schema import emb_bounds, expected_schema
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.rebuildable import read_rebuildable
from tol_dagster.store.verified import note_verified
from tol_dagster.validation.checks import SCHEMA_MATCHES_CONTRACT
from tol_dagster.validation.chunk_crcs import crcs_path
from tol_dagster.validation.emb_digests import digests_path
from tol_dagster.validation.file_facts import FileFacts, inspect_file
from tol_dagster.validation.uuid_index import hashes_path


def facts_path(layout: Layout, config: str, sha256: str) -> Path:
    return layout.derived_dir(config, sha256) / "facts.json"


def file_facts(layout: Layout, config: str, path: Path, sha256: str) -> FileFacts:
    """The per-file checks of a file that should hold the content `sha256`, cached by content.

    The bytes on disk are hashed again every time: the download hashed them in memory as they
    streamed by, and a file can change after it landed. A file without cached facts is hashed
    from the gate's own reads (`inspect_file`, which keeps the uuid hashes, emb digests and
    chunk crcs only for bytes that have `sha256`), not read twice. Only facts about bytes that
    do have `sha256` are cached (with those arrays); failures are cached too, since the same
    bytes always give the same facts and the gate reads them to say which check each file
    failed.
    """
    cached = facts_path(layout, config, sha256)
    at, stat = time.time(), path.stat()  # before hashing: what `note_verified` notes
    actual = sha256_file(path) if cached.is_file() else None
    if actual is not None and actual.lower() == sha256.lower():
        kept = read_rebuildable(cached, FileFacts.from_json, drop=True)
        if kept is not None:
            note_verified(layout, config, sha256, stat, at)
            return kept
    file = MirrorFile(path.name, sha256, path)
    facts = inspect_file(
        path,
        expected_sha256=sha256,
        actual_sha256=actual,
        expected_schema=expected_schema(config),
        uuid_hashes_path=hashes_path(layout, config, file),
        emb_bounds=emb_bounds(config),
        emb_digests_path=digests_path(layout, config, file),
        chunk_crcs_path=crcs_path(layout, config, file),
    )
    if facts.sha256.lower() == sha256.lower():
        note_verified(layout, config, sha256, stat, at)
        # last, and in their folder: its fsync makes the arrays' renames durable too
        write_atomic(cached, facts.to_json().encode())
    return facts


def cached_facts(layout: Layout, config: str, sha256: str) -> FileFacts | None:
    """The facts kept for `sha256`; None when none are, or they are damaged (then removed, so
    that the next `file_facts` inspects the file without hashing it first)."""
    return read_rebuildable(facts_path(layout, config, sha256), FileFacts.from_json, drop=True)


def refusal(facts: FileFacts, path: Path, config: str) -> str | None:
    """Why a file's own checks refuse it (None: it stays staged). A file that only adds columns
    to the contract stays staged: the gate decides, and `--accept-schema-change` may accept it
    without fetching the file again."""
    failing = facts.failures()
    if not failing:
        return None
    schema_only = all(r.check == SCHEMA_MATCHES_CONTRACT for r in failing)
    if schema_only and additive_extension(pq.read_schema(path), expected_schema(config)):
        return None
    return "; ".join(f"{r.check}: {r.message}" for r in failing)


def additive_extension(found: pa.Schema, contract: pa.Schema) -> bool:
    """`found` holds every contract column, in order and with its type, plus extra columns
    (as upstream revisions that add e.g. `resolution_status` do)."""
    names = [n for n in found.names if n in contract.names]
    return (
        names == contract.names
        and all(found.field(n).type == contract.field(n).type for n in contract.names)
        and len(found) > len(contract)
    )

"""One record per built slice: its catalog row plus how it was built, written by each slice run
and read by the catalog asset (the catalog's single writer) and the rebuild decisions.

Records live in the config's state folder (`Layout.state_dir`), one JSON file per slice, written
atomically: parallel slice runs each write their own and never race on the catalog.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tol_dagster.slices.extract import SliceResult
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.layout import Layout


def _record_path(layout: Layout, config: str, name: str) -> Path:
    return layout.slice_records_dir(config) / record_file_name(parse_slice_key(name))


def record_file_name(key: SliceKey) -> str:
    """The name of the file holding `key`'s record (its slice's, `.json` for `.parquet`)."""
    return key.file_name.removesuffix(".parquet") + ".json"


def slice_record(
    config: str,
    key: SliceKey,
    result: SliceResult,
    *,
    commit: str,
    generation: str,
    allow_empty: bool = False,
    how: dict[str, object] | None = None,
) -> dict[str, object]:
    """The slice's catalog row and how it was built (`how`: what a rank pass adds)."""
    return {
        "config": config,
        "name": key.name,
        "rank": key.rank,
        "value": key.value,
        "path": str(result.path),
        "rows": result.rows,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "upstream_commit": commit,
        "built_at": datetime.now(UTC).isoformat(),
        "generation": generation,
        "allow_empty": allow_empty,
        **(how or {}),
    }


def save_slice_record(
    layout: Layout,
    config: str,
    record: Mapping[str, object],
    *,
    sync_dir: bool = True,
    publish: Callable[[Path, Path], None] | None = None,
) -> None:
    """Write the record of the slice `record["name"]`, replacing the one of its last build
    (`sync_dir` and `publish`: see `store.durable.atomic_path`)."""
    write_atomic(
        _record_path(layout, config, str(record["name"])),
        json.dumps(record, indent=1).encode(),
        sync_dir=sync_dir,
        publish=publish,
    )


class RecordFolder:
    """A config's slice records, listed once and read by key (`take`), then the others
    (`rest`). Why: a rank pass asks for each of its values' record, and working out each
    one's path and trying to open it cost ~60 us a value (~50 s for 868,000 species whose
    records do not exist yet); what is left unasked is what the pass may have to remove."""

    def __init__(self, layout: Layout, config: str) -> None:
        self.folder = layout.slice_records_dir(config)
        listed = os.listdir(self.folder) if self.folder.is_dir() else []
        self.names = {n for n in listed if n.endswith(".json") and not n.startswith(".")}

    def take(self, key: SliceKey) -> dict[str, Any] | None:
        """`key`'s record (None if it was never built), taken off the list."""
        name = record_file_name(key)
        if name not in self.names:
            return None
        self.names.remove(name)
        try:
            return json.loads((self.folder / name).read_bytes())
        except FileNotFoundError:  # removed since it was listed
            return None

    def rest(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The records listed and not taken, with their paths, read one at a time."""
        for name in sorted(self.names):
            path = self.folder / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # removed since it was listed
                continue
            yield path, json.loads(data)


def slice_records(layout: Layout, config: str) -> Iterator[dict[str, object]]:
    """Every slice record of `config`: the catalog's rows, and what each slice was built from.
    Read one at a time: a rank of 868,000 species has as many records, ~2 kB each in memory;
    one removed while they are read (a rank pass dropping it) is skipped."""
    for _, record in RecordFolder(layout, config).rest():
        yield record


def allowed_empty(layout: Layout, config: str, name: str) -> bool:
    """Whether slice `name` was last built with allow_empty: rebuilds keep that consent."""
    path = _record_path(layout, config, name)
    return path.is_file() and bool(json.loads(path.read_text()).get("allow_empty"))


def remove_slice_records_named(layout: Layout, config: str, names: set[str]) -> list[Path]:
    """Remove the records whose `name` is one of `names`, found by content (a name that no
    longer parses as a key has no computable record path); returns the slice files they name."""
    paths = []
    for record, data in RecordFolder(layout, config).rest():
        if data.get("name") in names:
            if data.get("path"):
                paths.append(Path(str(data["path"])))
            record.unlink(missing_ok=True)
    return paths


def _rank_state_path(layout: Layout, config: str, rank: str) -> Path:
    return layout.state_dir(config) / "ranks" / f"{rank}.json"


def save_rank_state(layout: Layout, config: str, rank: str, min_rows: int) -> None:
    """Remember that `rank` is published whole, and with which `min_rows`: a resync refreshes
    it with the same setting (unless the slices file says otherwise)."""
    write_atomic(
        _rank_state_path(layout, config, rank), json.dumps({"min_rows": min_rows}).encode()
    )


def published_ranks(layout: Layout, config: str) -> dict[str, int]:
    """The ranks published whole for `config`, with the `min_rows` of their last pass."""
    folder = _rank_state_path(layout, config, "x").parent
    if not folder.is_dir():
        return {}
    return {
        p.stem: int(json.loads(p.read_text())["min_rows"]) for p in sorted(folder.glob("*.json"))
    }

"""One record per built slice: its catalog row plus how it was built, written by each slice run
and read by the catalog asset (the catalog's single writer) and the rebuild decisions.

Records live in the config's state folder (`Layout.state_dir`), one JSON file per slice, written
atomically: parallel slice runs each write their own and never race on the catalog.

A record that does not read as a JSON object (a damaged disk, an edit) is never taken for a bug:
what decides whether to rebuild a slice takes it for a slice never built, so the rebuild writes
it again; what reports the slices (the catalog) stops with `LocalStorageError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tol_dagster.errors import LocalStorageError, SliceSpecError
from tol_dagster.slices.extract import SliceResult
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.layout import Layout
from tol_dagster.store.renames import DeferredRenames


def record_path(layout: Layout, config: str, name: str) -> Path:
    """Where the record of slice `name` is kept."""
    return layout.slice_records_dir(config) / record_file_name(parse_slice_key(name))


def slice_file(folder: Path, name: str, recorded: str | None = None) -> Path:
    """Where slice `name`'s file is in this home, whose slices folder (of its config) is
    `folder`: its key's file there. Records and catalogs keep the absolute path of the home they
    were written in, and a home can move (the mirror's link is relative); a `recorded` path in
    `folder` is taken as it is (no key parsed: a catalog of 868,000 species), and a name that
    no longer parses as a key keeps its recorded path."""
    if recorded is not None and os.path.dirname(recorded) == str(folder):
        return Path(recorded)
    try:
        return folder / parse_slice_key(name).file_name
    except SliceSpecError:
        if recorded is None:
            raise
        return Path(recorded)


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
    deferred: DeferredRenames | None = None,
) -> None:
    """Write the record of the slice `record["name"]`, replacing the one of its last build
    (`sync_dir`: see `store.durable.atomic_path`); `deferred` writes it in turn, and the
    caller syncs the folder."""
    path = record_path(layout, config, str(record["name"]))
    data = json.dumps(record, indent=1).encode()
    if deferred is not None:
        deferred.write(data, path)
    else:
        write_atomic(path, data, sync_dir=sync_dir)


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
            return read_json_object(self.folder / name)  # damaged: rebuilt as never built
        except FileNotFoundError:  # removed since it was listed
            return None

    def rest(self) -> Iterator[tuple[Path, dict[str, Any] | None]]:
        """The records listed and not taken, with their paths, read one at a time; None for a
        damaged one (`read_json_object`)."""
        for name in sorted(self.names):
            path = self.folder / name
            try:
                yield path, read_json_object(path)
            except FileNotFoundError:  # removed since it was listed
                continue


def read_json_object(path: Path, needs: str = "name") -> dict[str, Any] | None:
    """The JSON object in the file at `path`; None when it holds anything else, or lacks the
    field `needs` (a record's `name`)."""
    try:
        found = json.loads(path.read_bytes())
    except ValueError:  # not JSON, or not UTF-8
        return None
    return found if isinstance(found, dict) and needs in found else None


def damaged_record(path: Path) -> LocalStorageError:
    """The error for the damaged record at `path`, naming what writes it again."""
    name = unquote(path.stem)
    return LocalStorageError(
        f"the slice record {path} is damaged (not a JSON object with a name): rebuild its "
        f"slice to write it again (`tol-dagster slice {shlex.quote(name)}`, or `tol-dagster "
        "slices add-rank RANK` for a rank's), or delete it and the slice's file to drop the slice"
    )


def slice_records(layout: Layout, config: str) -> Iterator[dict[str, object]]:
    """Every slice record of `config`: the catalog's rows, and what each slice was built from.
    Read one at a time: a rank of 868,000 species has as many records, ~2 kB each in memory;
    one removed while they are read (a rank pass dropping it) is skipped, a damaged one raises
    `damaged_record`."""
    for path, record in RecordFolder(layout, config).rest():
        if record is None:
            raise damaged_record(path)
        yield record


def built_generations(layout: Layout, config: str) -> dict[str, object]:
    """The generation each slice was last built from, by name; a damaged record's slice is
    left out, as if never built, so that it is rebuilt."""
    return {
        str(record["name"]): record.get("generation")
        for _, record in RecordFolder(layout, config).rest()
        if record is not None
    }


def slice_record_of(layout: Layout, config: str, name: str) -> dict[str, Any] | None:
    """The record of slice `name`; None when there is none or it is damaged."""
    try:
        return read_json_object(record_path(layout, config, name))
    except FileNotFoundError:
        return None


def record_if_key(layout: Layout, config: str, name: str) -> dict[str, Any] | None:
    """`slice_record_of`, None too for a name that no longer parses as a key (made before a
    rule: no record path is computable for it)."""
    try:
        return slice_record_of(layout, config, name)
    except SliceSpecError:
        return None


def allowed_empty(layout: Layout, config: str, name: str) -> bool:
    """Whether slice `name` was last built with allow_empty: rebuilds keep that consent (not
    a damaged record's: the rebuild then needs it again, and writes the record anew)."""
    record = slice_record_of(layout, config, name)
    return record is not None and bool(record.get("allow_empty"))


def remove_slice_records_named(layout: Layout, config: str, names: set[str]) -> list[Path]:
    """Remove the records whose `name` is one of `names`, found by content (a name that no
    longer parses as a key has no computable record path), or by file name when damaged;
    returns the slice files they name."""
    paths, folder = [], layout.slices_dir(config)
    keys = _keys_by_record_file(names)
    for path, record in RecordFolder(layout, config).rest():
        if record is None and path.name in keys:
            paths.append(folder / keys[path.name].file_name)
            path.unlink(missing_ok=True)
        elif record is not None and record.get("name") in names:
            if record.get("path"):
                paths.append(slice_file(folder, record["name"], str(record["path"])))
            path.unlink(missing_ok=True)
    return paths


def _keys_by_record_file(names: set[str]) -> dict[str, SliceKey]:
    """The keys among `names` that parse, by the name of their record's file."""
    keys = {}
    for name in names:
        with contextlib.suppress(SliceSpecError):
            key = parse_slice_key(name)
            keys[record_file_name(key)] = key
    return keys


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
    return {p.stem: _min_rows(p) for p in sorted(folder.glob("*.json"))}


def _min_rows(path: Path) -> int:
    """The `min_rows` a rank state file at `path` keeps."""
    state = read_json_object(path, "min_rows")
    if state is None or not isinstance(state["min_rows"], int):
        raise LocalStorageError(
            f"the rank state {path} is damaged (no whole `min_rows`): publish the rank again "
            f"to write it anew (`tol-dagster slices add-rank {path.stem} --min-rows N`, 1 for "
            "every value), or delete it and resyncs no longer refresh that rank's slices"
        )
    return int(state["min_rows"])

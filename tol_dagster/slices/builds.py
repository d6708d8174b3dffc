"""What the published outputs were built from, so only what a resync affected is rebuilt.

Dagster cannot know which slice depends on which mirror file: that mapping is in the data (the
taxon index). This module keeps the small state that lets a sensor decide: the mirror files
(name -> sha256) each derived output was last built from, the taxon index that went with the
previous build, and one record per built slice (its catalog row).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tol_dagster.derived.taxon_index import read_taxon_index
from tol_dagster.errors import SettingsError, SliceSpecError, StoreError
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.slices.rebuilds import affected_slices
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.generations import pin_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration

logger = logging.getLogger("tol_dagster.slices.builds")


def mirror_inputs(layout: Layout, config: str) -> tuple[Manifest, list[MirrorFile]]:
    """The published mirror's manifest and files; a clear error when nothing is published yet.

    The files are those of the generation current when called, with their own sha256s, at
    paths that do not move (see `pins`); the manifest may describe the next one if a publish
    lands in between. A run that reads the files uses `mirror.pin_generation` instead.
    """
    manifest = load_manifest(layout, config)
    if manifest is None:
        raise StoreError(
            f"{config}: no mirror is published under {layout.home} yet; run `tol-dagster sync` "
            f"(or materialize tol/{config}/mirror) first"
        )
    return manifest, pin_generation(layout, config, lease=False).mirror_files()


def pinned_schema(layout: Layout, pinned: PinnedGeneration) -> pa.Schema:
    """The schema of the pinned generation: the manifest's when it describes that generation
    (the accepted, possibly extended schema), else its first file's footer."""
    manifest = load_manifest(layout, pinned.config)
    if manifest is not None and manifest.generation == pinned.name and manifest.schema:
        return manifest.schema
    files = pinned.mirror_files()
    if not files:
        raise StoreError(f"{pinned.config}: generation {pinned.name} holds no file to read")
    return pq.read_schema(files[0].path)


def file_map(files: list[MirrorFile]) -> dict[str, str]:
    return {f.name: f.sha256 for f in files}


def changed_files(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Files added, removed or changed (by sha256) between two builds."""
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}


# --- what each derived output was built from -------------------------------------------------


class Generation(Protocol):
    """A generation's identity: a `Manifest` or a `PinnedGeneration`."""

    @property
    def generation(self) -> str: ...

    @property
    def upstream_commit(self) -> str: ...


@dataclass(frozen=True)
class BuiltFrom:
    """The mirror generation (and its files) an output was last built from."""

    generation: str
    upstream_commit: str
    files: dict[str, str]


def _built_path(layout: Layout, config: str, output: str) -> Path:
    return layout.state_dir(config) / f"built-{output}.json"


def load_built_from(layout: Layout, config: str, output: str) -> BuiltFrom | None:
    path = _built_path(layout, config, output)
    return BuiltFrom(**json.loads(path.read_text())) if path.is_file() else None


def save_built_from(
    layout: Layout, config: str, output: str, manifest: Generation, files: list[MirrorFile]
) -> None:
    built = BuiltFrom(manifest.generation, manifest.upstream_commit, file_map(files))
    write_atomic(_built_path(layout, config, output), json.dumps(asdict(built), indent=1).encode())


# --- the taxon index of the previous build ----------------------------------------------------


def previous_index_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "taxon_index.previous.parquet"


def keep_previous_index(layout: Layout, config: str) -> None:
    """Before the index is rebuilt, keep the current one: the slices sensor diffs the two."""
    current = layout.taxon_index_path(config)
    if current.is_file():
        target = previous_index_path(layout, config)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, target)
        previous_built = _built_path(layout, config, "taxon_index")
        if previous_built.is_file():
            shutil.copyfile(
                previous_built, layout.state_dir(config) / "built-taxon_index.previous.json"
            )


def previous_index(layout: Layout, config: str) -> tuple[pa.Table | None, dict[str, str]]:
    """The index (and its files) from before the last rebuild; (None, {}) before any."""
    path = previous_index_path(layout, config)
    built = layout.state_dir(config) / "built-taxon_index.previous.json"
    if not path.is_file() or not built.is_file():
        return None, {}
    return pq.read_table(path), json.loads(built.read_text())["files"]


# --- slices declared in the repo ----------------------------------------------------------------


def declared_slices(path: Path, config: str) -> list[str]:
    """Canonical keys the slices file declares for `config` (`all` applies to every config)."""
    if not path.is_file():
        raise SettingsError(
            f"TOL_SLICES_FILE={path}: no such file; point it at a YAML file with a `slices:` mapping"
        )
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML ({error})") from None
    section = document.get("slices", {}) if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise SettingsError(
            f"{path}: expected `slices:` mapping config names (or `all`) to lists of keys"
        )
    keys = [*(section.get("all") or []), *(section.get(config) or [])]
    return list(dict.fromkeys(parse_slice_key(str(key)).name for key in keys))


# --- one record per built slice: the catalog's rows, written by each slice, read by the catalog --


def _records_dir(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "slices"


def _record_path(layout: Layout, config: str, name: str) -> Path:
    return _records_dir(layout, config) / (
        parse_slice_key(name).file_name.removesuffix(".parquet") + ".json"
    )


def save_slice_record(layout: Layout, config: str, record: Mapping[str, object]) -> None:
    write_atomic(
        _record_path(layout, config, str(record["name"])), json.dumps(record, indent=1).encode()
    )


def slice_records(layout: Layout, config: str) -> list[dict[str, object]]:
    folder = _records_dir(layout, config)
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def allowed_empty(layout: Layout, config: str, name: str) -> bool:
    """Whether slice `name` was last built with allow_empty: rebuilds keep that consent."""
    path = _record_path(layout, config, name)
    return path.is_file() and bool(json.loads(path.read_text()).get("allow_empty"))


def remove_slice_record(layout: Layout, config: str, name: str) -> bool:
    path = _record_path(layout, config, name)
    if path.is_file():
        path.unlink()
        return True
    return False


def remove_slice_records_named(layout: Layout, config: str, names: set[str]) -> list[Path]:
    """Remove the records whose `name` is one of `names`, found by content (a name that no
    longer parses as a key has no computable record path); returns the slice files they name."""
    folder = _records_dir(layout, config)
    paths = []
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = json.loads(record.read_text())
        if data.get("name") in names:
            if data.get("path"):
                paths.append(Path(str(data["path"])))
            record.unlink()
    return paths


def _parseable(keys: list[str], config: str) -> list[str]:
    """`keys` that parse as slice keys; the others (partitions made before a rule was
    tightened, or by hand) cannot be built, so they are skipped with a warning saying how to
    remove them, instead of stopping every other slice's rebuild."""
    kept = []
    for key in keys:
        try:
            parse_slice_key(key)
        except SliceSpecError as error:
            logger.warning(
                f"{config}: partition {key!r} is not a valid slice key and is not rebuilt "
                f"({error}); remove it with `tol-dagster slices remove {key!r}`"
            )
            continue
        kept.append(key)
    return kept


def slices_to_rebuild(
    layout: Layout, config: str, keys: list[str], built: BuiltFrom
) -> tuple[list[str], set[str]]:
    """The slices among `keys` whose taxa have rows in files changed since the previous index
    (or that were never built), minus those already built from this generation; and the
    changed files. `built` is what the current taxon index was built from."""
    records = {str(r["name"]): r for r in slice_records(layout, config)}
    keys = _parseable(keys, config)
    old_index, old_files = previous_index(layout, config)
    changed = changed_files(old_files, built.files)
    todo = affected_slices(
        keys, old_index, read_taxon_index(layout, config), changed, built=records
    )
    fresh = {name for name, r in records.items() if r.get("generation") == built.generation}
    return [key for key in todo if key not in fresh], changed

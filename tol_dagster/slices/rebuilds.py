"""Which slices to build: those the repo declares (keys, and whole ranks: `declared_ranks`), and
after a resync those whose taxa have rows in a file that changed.

Dagster cannot know which slice depends on which mirror file: that mapping is in the data (the
taxon index). The old and the new index together name every file a slice's rows were or are in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from tol_dagster.derived.built_from import BuiltFrom, changed_files, previous_index
from tol_dagster.derived.taxon_index import read_taxon_index
from tol_dagster.errors import SettingsError, SliceSpecError
from tol_dagster.schema import RANKS
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.slices.locate import locate
from tol_dagster.slices.records import built_generations
from tol_dagster.store.layout import Layout

logger = logging.getLogger("tol_dagster.slices.rebuilds")


def declared_slices(path: Path, config: str) -> list[str]:
    """Canonical keys the slices file declares for `config` (`all` applies to every config)."""
    section = _load(path).get("slices", {})
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: {_SLICES_HELP}")
    keys = []
    for key in _listed(path, section, config, "slices", _SLICES_HELP):
        try:
            keys.append(parse_slice_key(str(key)).name)
        except SliceSpecError as error:
            raise SliceSpecError(f"{path}: `slices:` entry {key!r}: {error}") from None
    return list(dict.fromkeys(keys))


_SLICES_HELP = "expected `slices:` mapping config names (or `all`) to lists of keys"


@dataclass(frozen=True)
class RankSpec:
    """A whole rank to publish, one slice per value with at least `min_rows` rows."""

    rank: str
    min_rows: int = 1


_RANKS_HELP = (
    "write `ranks:` as a list such as [family, {rank: genus, min_rows: 100}] (or a mapping of "
    f"config names, or `all`, to such lists); a rank is one of {', '.join(RANKS)}"
)


def declared_ranks(path: Path, config: str) -> list[RankSpec]:
    """The whole ranks the slices file declares for `config`: `ranks:` is a list (every
    config) or maps config names and `all` to lists; an entry is a rank name or
    `{rank: NAME, min_rows: N}`. A rank named twice keeps its last entry."""
    section = _load(path).get("ranks") or []
    entries = _listed(path, section, config, "ranks", _RANKS_HELP)
    specs = {spec.rank: spec for spec in (_rank_entry(path, entry) for entry in entries)}
    return list(specs.values())


def _listed(path: Path, section: object, config: str, name: str, help: str) -> list[object]:
    """The entries of section `name` for `config`: a list, or a mapping of config names and
    `all` to lists; SettingsError naming the file and what is not a list."""
    parts = [section.get("all"), section.get(config)] if isinstance(section, dict) else [section]
    entries: list[object] = []
    for part in parts:
        if part is not None and not isinstance(part, list):
            raise SettingsError(f"{path}: `{name}:` holds {part!r} where a list belongs; {help}")
        entries += part or []
    return entries


def _rank_entry(path: Path, entry: object) -> RankSpec:
    """One `ranks:` entry, validated; SettingsError naming the file, the entry and the fix."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"rank", "min_rows"}
        min_rows = entry.get("min_rows", 1)
        if unknown or "rank" not in entry:
            raise SettingsError(
                f"{path}: `ranks:` entry {entry!r} needs `rank` and may have `min_rows`, "
                f"nothing else; {_RANKS_HELP}"
            )
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
            raise SettingsError(
                f"{path}: `ranks:` entry {entry!r}: min_rows must be a whole number >= 1"
            )
        return RankSpec(checked_rank(entry["rank"], f"{path}: `ranks:` entry {entry!r}"), min_rows)
    return RankSpec(checked_rank(entry, f"{path}: `ranks:` entry {entry!r}"))


def checked_rank(rank: object, where: str) -> str:
    """`rank` if a whole rank can be sliced by it; SliceSpecError saying which can."""
    if rank in RANKS:
        return str(rank)
    why = (
        "scientific_name is not a rank to publish whole (about one slice per image); "
        if rank == "scientific_name"
        else f"{rank!r} is not a rank; "
    )
    raise SliceSpecError(f"{where}: {why}use one of {', '.join(RANKS)}")


def _load(path: Path) -> dict:
    """The slices file's document (a mapping)."""
    if not path.is_file():
        raise SettingsError(
            f"TOL_SLICES_FILE={path}: no such file; point it at a YAML file with a `slices:` mapping"
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: not valid UTF-8 YAML ({error})") from None
    if not isinstance(document, dict):
        raise SettingsError(
            f"{path}: expected `slices:` mapping config names (or `all`) to lists of keys"
        )
    return document


def slices_to_rebuild(
    layout: Layout, config: str, keys: list[str], built: BuiltFrom
) -> tuple[list[str], set[str]]:
    """The slices among `keys` whose taxa have rows in files changed since the previous index
    (or that were never built), minus those already built from this generation; and the
    changed files. `built` is what the current taxon index was built from."""
    generations = built_generations(layout, config)
    keys = _parseable(keys, config)
    old_index, old_files = previous_index(layout, config)
    changed = changed_files(old_files, built.files)
    todo = affected_slices(
        keys, old_index, read_taxon_index(layout, config), changed, built=generations
    )
    fresh = {name for name, generation in generations.items() if generation == built.generation}
    return [key for key in todo if key not in fresh], changed


def affected_slices(
    keys: Iterable[str | SliceKey],
    old_index: pa.Table | None,
    new_index: pa.Table,
    changed_files: set[str],
    *,
    built: Iterable[str] | None = None,
) -> list[str]:
    """Canonical names of the slices to rebuild after a resync, in the order of `keys`.

    A slice is affected when its taxon has rows, by the old or the new index, in a file that
    changed, appeared or disappeared (`changed_files`, by file name). Keys not in `built`
    (when given) and every key when there is no old index are included: never built.
    """
    done = None if built is None else {parse_slice_key(str(b)).name for b in built}
    names: dict[str, None] = {}
    for item in keys:
        key = item if isinstance(item, SliceKey) else parse_slice_key(item)
        fresh = old_index is None or (done is not None and key.name not in done)
        if fresh or any(
            _touches(key, index, changed_files)
            for index in (old_index, new_index)
            if index is not None
        ):
            names[key.name] = None
    return list(names)


def _touches(key: SliceKey, index: pa.Table, changed_files: set[str]) -> bool:
    """`key`'s rows, by `index`, lie in a changed file (any change, when the index cannot
    locate the key)."""
    spans = locate(key, index)
    return bool(changed_files) if spans is None else not changed_files.isdisjoint(spans)


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

"""`tol-dagster slice KEY` and `tol-dagster slices list|remove|add-rank`: slices on demand.

A slice is built through Dagster (its dynamic partition added first) after the derived tables
it reads are brought up to date, and the catalog is rewritten after every change, so the UI,
the catalog and the files on disk always tell the same story.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from tol_dagster import catalog
from tol_dagster.cli import progress_view, report, verbosity
from tol_dagster.cli.config_option import one_config, select_configs
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.runner import _build_rank, _build_slice, _ensure_derived, _refresh_catalog
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.published.partitions import slices_partitions_name
from tol_dagster.derived import built_from, taxon_index
from tol_dagster.errors import SettingsError, SliceSpecError
from tol_dagster.settings import Settings
from tol_dagster.slices import catalog_file, records
from tol_dagster.slices.counts import expected_count, refuse_empty
from tol_dagster.slices.keys import SliceKey, parse_slice_key
from tol_dagster.slices.rank_pass import RANK_PASS
from tol_dagster.slices.rebuilds import checked_rank


def run_slice(key_text: str, *, config: str | None, allow_empty: bool = False) -> int:
    """Materialize one slice through Dagster (adding its partition), refresh the catalog.

    A key matching no row is refused (exit 2, close matches named) before any partition or
    run is made, unless `allow_empty` (now or when the slice was last built). On a terminal the
    rows written show as a bar, then a short report; the slice's path is the last line."""
    settings = Settings.from_env()
    key = parse_slice_key(key_text)
    name = one_config(settings, config)
    built_from.mirror_inputs(settings.layout, name)  # no mirror: say so before touching anything
    instance = open_instance(settings)
    defs = load_code_location(settings)
    started = time.monotonic()
    with progress_view.shown(name) as view:
        code, lines = _ensure_derived(defs, instance, settings, name)
        if not code and not (allow_empty or records.allowed_empty(settings.layout, name, key.name)):
            expected = _refuse_empty(settings, name, key)
            if view is not None:
                view.expect("slice", rows=expected)
        if not code:
            code, lines = _build_slice(defs, instance, name, key.name, allow_empty=allow_empty)
        if not code:
            code, lines = _refresh_catalog(defs, instance, name)
    facts = report.slice_facts(settings, name, key.name, code, time.monotonic() - started)
    if verbosity.as_json():
        report.print_document("slice", code, lines, **facts)
    elif code == 0:
        report.slice_report(facts)
        report.say(str(settings.layout.slices_dir(name) / key.file_name))
    return code


def _refuse_empty(settings: Settings, name: str, key: SliceKey) -> int:
    """The rows of the mirror that match `key`; `EmptySliceError` (exit 2) if none."""
    _, files = built_from.mirror_inputs(settings.layout, name)
    index = taxon_index.read_taxon_index(settings.layout, name)
    expected = expected_count(key, index, files)
    refuse_empty(key, index, expected)
    return expected


def add_rank_command(rank: str, *, config: str | None, min_rows: int | None = None) -> int:
    """Publish a slice for every value of `rank` in one pass through Dagster (the partition
    `rank` of `tol/<config>/rank_slices`), then refresh the catalog once."""
    settings = Settings.from_env()
    checked_rank(rank, f"add-rank {rank!r}")
    if min_rows is not None and min_rows < 1:
        raise SettingsError(
            f"--min-rows {min_rows}: give a whole number >= 1 (1 publishes every value)"
        )
    name = one_config(settings, config)
    built_from.mirror_inputs(settings.layout, name)  # no mirror: say so before touching anything
    instance = open_instance(settings)
    defs = load_code_location(settings)
    with progress_view.shown(name):
        code, lines = _ensure_derived(defs, instance, settings, name)
        if not code:
            code, lines = _build_rank(defs, instance, settings.layout, name, rank, min_rows)
        code = max(code, _refresh_catalog(defs, instance, name)[0])
    if verbosity.as_json():
        report.print_document("slices add-rank", code, lines, rank=rank, config=name)
    elif code == 0:
        published = [
            r for r in records.slice_records(settings.layout, name) if r.get(RANK_PASS) == rank
        ]
        rows = sum(int(str(r["rows"])) for r in published)
        report.say(f"{name}: {len(published):,} {rank} slices, {rows:,} rows")
        report.say(str(settings.layout.slices_dir(name)))
    return code


def list_slices_command(*, config: str | None) -> int:
    """The published slices, one tab-separated line each: config, name, rows, MB, path."""
    settings = Settings.from_env()
    if config is not None:
        select_configs(settings, config)
    table = catalog.list_slices(config=config, home=settings.home)
    if table.empty:
        report.say(
            "no slices published yet; build one with `tol-dagster slice KEY` (e.g. family=Felidae)"
        )
        return 0
    for row in table.to_dict("records"):
        report.say(
            f"{row['config']}\t{row['name']}\t{int(row['rows']):,} rows\t{int(row['bytes']) / 1e6:,.1f} MB\t{row['path']}"
        )
    return 0


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False for a name the file system cannot hold (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def remove_slice_command(key_text: str, *, config: str | None) -> int:
    """Remove a slice: its partition, its file and its catalog row (the catalog is rewritten).

    Works for any existing partition, even one whose name no longer parses as a key (made
    before a rule was tightened, or added by hand in the UI): the raw text is matched too."""
    settings = Settings.from_env()
    name = one_config(settings, config)
    layout = settings.layout
    try:
        key: SliceKey | None = parse_slice_key(key_text)
    except SliceSpecError as error:
        key, invalid = None, error
    names = {key_text} if key is None else {key.name, key_text}
    instance = open_instance(settings)
    partitions = slices_partitions_name(name)
    known = sorted(n for n in names if instance.has_dynamic_partition(partitions, n))
    slices_dir = layout.slices_dir(name)
    paths = {slices_dir / f"{quote(n, safe='')}.parquet" for n in names}  # hand-made names
    if key is not None:
        paths.add(slices_dir / key.file_name)
    paths.update(records.remove_slice_records_named(layout, name, names))
    files = sorted(p for p in paths if p.parent == slices_dir and _is_file(p))
    in_catalog = catalog_file.remove_entry(layout, name, key_text)
    if not (known or files or in_catalog):
        why = f" (nor a valid key: {invalid})" if key is None else ""
        raise SliceSpecError(
            f"slice {key_text if key is None else key.name!r} of {name} does not exist{why}; "
            "`tol-dagster slices list` shows the slices"
        )
    for partition in known:
        instance.delete_dynamic_partition(partitions, partition)
    for path in files:
        path.unlink(missing_ok=True)
    code, _ = _refresh_catalog(load_code_location(settings), instance, name)
    report.say(f"removed {key_text if key is None else key.name} from {name}")
    return code

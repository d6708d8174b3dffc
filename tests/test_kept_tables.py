"""A slice is checked against the tables the gate keeps per mirror file (`emb` digests, chunk
crcs); a byte flipped in one still loads, and failed every slice whose rows it covers, for as
long as the file stayed in the mirror. A failing check now has those tables checked against
the mirror file and the damaged ones computed anew before its verdict; a check that fails
because the slice is wrong, or the mirror file rotted, still fails."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    flip_a_byte,
    manifest,
    synced,
    synced_home,
    user,
)

from tol_dagster.errors import StoreError
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs, emb_digests, kept_tables

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

KEY = "family=Felidae"


def _files(layout: Layout) -> list[MirrorFile]:
    folder = layout.mirror_dir(CONFIG)
    return [MirrorFile(e.name, e.sha256, folder / e.name) for e in manifest(layout).entries]


def _ensure(layout: Layout) -> dict[str, bytes]:
    """Every file's kept tables, computed if the gate of the synced home did not keep them."""
    kept = {}
    for file in _files(layout):
        emb_digests.ensure_table(file, layout, CONFIG)
        chunk_crcs.ensure(file, layout, CONFIG)
        for path in (
            emb_digests.digests_path(layout, CONFIG, file),
            chunk_crcs.crcs_path(layout, CONFIG, file),
        ):
            kept[str(path)] = path.read_bytes()
    return kept


def _damage(layout: Layout) -> None:
    """Every digest and every chunk crc wrong, in tables that still load."""
    for file in _files(layout):
        digests = emb_digests.digests_path(layout, CONFIG, file)
        table = np.load(digests)
        table[1] ^= np.uint64(1)
        emb_digests.save_table(digests, table)
        crcs = chunk_crcs.crcs_path(layout, CONFIG, file)
        kept = np.load(crcs)
        kept[..., 2] ^= np.uint64(1)
        chunk_crcs.save(crcs, kept)


def test_a_slice_checked_against_damaged_kept_tables_mends_them_and_publishes(
    synced: User,
) -> None:
    layout = synced.layout
    originals = _ensure(layout)
    _damage(layout)

    outcome = synced.tol("slice", KEY)
    assert outcome.code == 0, outcome.text
    assert "damaged, computed anew from the mirror" in outcome.text
    assert {p: Path(p).read_bytes() for p in originals} == originals
    published = layout.slices_dir(CONFIG) / "family%3DFelidae.parquet"
    audit = synced.tol("audit")
    assert audit.code == 0 and published.is_file(), audit.text


def test_mend_replaces_only_what_differs_and_names_a_mirror_file_that_changed(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = synced.layout
    _ensure(layout)
    file, other = _files(layout)[:2]
    computed: list[str] = []
    real = chunk_crcs.compute
    monkeypatch.setattr(chunk_crcs, "compute", lambda f: computed.append(f.name) or real(f))
    assert kept_tables.mend(file, layout, CONFIG) == []
    assert kept_tables.mend(file, layout, CONFIG) == []
    assert computed == [file.name], "tables found sound are not recomputed in this process"

    digests = emb_digests.digests_path(layout, CONFIG, file)
    before = digests.read_bytes()
    digests.write_bytes(b"not a table")
    assert kept_tables.mend(file, layout, CONFIG) == [digests]
    assert digests.read_bytes() == before

    flip_a_byte(other.path)
    assert sha256_file(other.path) != other.sha256
    with pytest.raises(StoreError, match="changed on disk"):
        kept_tables.mend(other, layout, CONFIG)


def test_what_was_mended_is_a_warning_in_the_runs_event_log(synced: User) -> None:
    """The UI shows a run's events: our loggers' warnings are among them (dagster.yaml's
    `python_logs`), not only in the step's stderr."""
    layout = synced.layout
    _ensure(layout)
    _damage(layout)
    assert synced.tol("slice", KEY).code == 0

    with dg.DagsterInstance.get() as instance:
        warnings = [
            event.user_message
            for run in instance.get_runs()
            for event in instance.all_logs(run.run_id)
            if event.level == logging.WARNING
        ]
    assert any("damaged, computed anew from the mirror" in w for w in warnings), warnings

"""What one run keeps for the next and the next can do without (a file's gate facts, what the
derived tables were built from, upstream's last state) is computed again when damaged, never a
bug (exit 70): the sync and the slice that follow succeed and write it anew, as it was."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    manifest,
    synced,
    synced_home,
    user,
    valid_edit,
)

from tol_dagster.derived import built_from
from tol_dagster.errors import LocalStorageError
from tol_dagster.hub.client import HubClient
from tol_dagster.resync.gate import run_gate
from tol_dagster.resync.publish import publish
from tol_dagster.resync.stage import stage
from tol_dagster.resync.state import load_remote, load_staged, refresh_remote
from tol_dagster.store.layout import Layout
from tol_dagster.store.rebuildable import read_rebuildable

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

#: Cut short, not UTF-8, another shape.
DAMAGES = [b'{"generation": "a', b"\xff\xfe{}", b"[1, 2]"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_file_reads_as_never_written_and_says_so(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "built-summaries.json"
    assert read_rebuildable(path, json.loads) is None, "missing"
    path.write_text('{"files": {"a": "1"}}')
    assert read_rebuildable(path, lambda text: dict(json.loads(text)["files"])) == {"a": "1"}

    path.write_bytes(damage)
    with caplog.at_level(logging.WARNING):
        assert read_rebuildable(path, lambda text: dict(json.loads(text)["files"])) is None
    assert f"{path} is damaged" in caplog.text and path.exists(), "kept, unless dropped"
    assert read_rebuildable(path, lambda text: json.loads(text)["files"], drop=True) is None
    assert not path.exists(), "a damaged cache is dropped when asked"


def _kept(layout: Layout) -> dict[Path, bytes]:
    """Every gate facts file and derived-tables state of the config, by path."""
    store = layout.store_dir(CONFIG)
    paths = [*store.glob("derived/*/facts.json"), *layout.state_dir(CONFIG).glob("built-*.json")]
    return {path: path.read_bytes() for path in sorted(paths)}


def test_a_sync_and_a_slice_rewrite_damaged_facts_and_states_as_they_were(synced: User) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    layout = synced.layout
    before = _kept(layout)
    remote = layout.state_dir(CONFIG) / "remote.json"
    assert len([p for p in before if p.name == "facts.json"]) == 3
    assert {p.name for p in before} >= {"built-summaries.json", "built-taxon_index.json"}
    for n, path in enumerate([*before, remote]):
        path.write_bytes(DAMAGES[n % len(DAMAGES)])
    assert built_from.load_built_from(layout, CONFIG, "taxon_index") is None
    assert load_remote(layout, CONFIG) is None

    synced_again = synced.sync()
    assert synced_again.code == 0, synced_again.text
    facts = [p for p in before if p.name == "facts.json"]
    told = [synced_again.text.count(f"{p} is damaged") for p in facts]
    assert told == [1] * len(facts), "the user is told, once a file"
    sliced = synced.tol("slice", "family=Felidae")
    assert sliced.code == 0, sliced.text

    assert _kept(layout) == before, "the facts and states are computed again, the same"
    assert load_remote(layout, CONFIG) is not None


def test_an_index_whose_build_record_is_damaged_leaves_no_previous_index(
    tmp_path: Path,
) -> None:
    """The slices sensor diffs the index against the one before; without a record of what that
    one was built from it has nothing to diff against, and every slice is rebuilt."""
    layout = Layout(tmp_path)
    index = layout.taxon_index_path(CONFIG)
    index.parent.mkdir(parents=True)
    pq.write_table(pa.table({"file": ["a.parquet"]}), index)
    built = built_from.BuiltFrom("g1", "c1", {"a.parquet": "1" * 64})
    layout.state_dir(CONFIG).mkdir(parents=True)
    (layout.state_dir(CONFIG) / "built-taxon_index.json").write_text(json.dumps(asdict(built)))

    built_from.keep_previous_index(layout, CONFIG)
    table, files = built_from.previous_index(layout, CONFIG)
    assert table is not None and files == {"a.parquet": "1" * 64}

    previous = layout.state_dir(CONFIG) / "built-taxon_index.previous.json"
    previous.write_bytes(DAMAGES[0])
    assert built_from.previous_index(layout, CONFIG) == (None, {})

    built_from.keep_previous_index(layout, CONFIG)  # the current record read again: kept
    assert built_from.previous_index(layout, CONFIG)[1] == {"a.parquet": "1" * 64}
    (layout.state_dir(CONFIG) / "built-taxon_index.json").write_bytes(DAMAGES[1])
    built_from.keep_previous_index(layout, CONFIG)
    assert not previous.exists() and not built_from.previous_index_path(layout, CONFIG).exists()
    assert built_from.previous_index(layout, CONFIG) == (None, {})


def test_a_damaged_staged_state_publishes_nothing_and_names_it(synced: User) -> None:
    layout, first = synced.layout, sorted((synced.root / CONFIG).glob("*.parquet"))[0]
    valid_edit(synced.root, first.name)
    client = HubClient(synced.hub.endpoint, synced.hub.repo_id, None)
    refresh_remote(layout, client, CONFIG)
    state = stage(layout, client, CONFIG, log=lambda _: None)
    assert all(r.passed for r in run_gate(layout, state, max_row_loss=0.01))
    saved = load_staged(layout, CONFIG, state.key)
    assert saved is not None and saved.gate_passed
    before = manifest(layout)

    (layout.store_dir(CONFIG) / "state" / "staged" / f"{state.key}.json").write_bytes(DAMAGES[0])
    assert load_staged(layout, CONFIG) is None, "the newest, for reuse only: none"
    with pytest.raises(
        LocalStorageError, match=f"the state staged by run {state.key} .* is damaged"
    ):
        publish(layout, CONFIG, key=state.key, log=lambda _: None)
    assert manifest(layout) == before, "the mirror keeps its generation"


def test_a_kill_while_the_previous_index_is_kept_leaves_no_index_paired_with_another_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    index = layout.taxon_index_path(CONFIG)
    index.parent.mkdir(parents=True)
    state = layout.state_dir(CONFIG)
    state.mkdir(parents=True)
    for generation, file in [("g1", "a.parquet"), ("g2", "b.parquet")]:
        pq.write_table(pa.table({"file": [file]}), index)
        built = built_from.BuiltFrom(generation, "c", {file: "1" * 64})
        (state / "built-taxon_index.json").write_text(json.dumps(asdict(built)))
        if generation == "g1":
            built_from.keep_previous_index(layout, CONFIG)

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt("killed after the index was copied")

    monkeypatch.setattr(built_from, "write_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        built_from.keep_previous_index(layout, CONFIG)
    table, files = built_from.previous_index(layout, CONFIG)
    assert (table, files) == (None, {}), "g2's index must not pass for g1's files"

"""The durable manifest and the plan that diffs it against upstream by sha256."""

from __future__ import annotations

import base64
import hashlib
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from resync_testing import a_digit_changed

from tol_dagster.errors import StoreError, UpstreamError
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.resync.plan import manifest_after, plan_sync
from tol_dagster.schema import expected_schema
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import (
    Manifest,
    ManifestEntry,
    load_manifest,
    save_manifest,
    schema_from_json,
    schema_to_json,
)

CONFIG = "bioclip-2_float16"
REPO = "imageomics/TreeOfLife-200M-Embeddings"


def remote_file(name: str, content: bytes) -> RemoteFile:
    return RemoteFile(f"{CONFIG}/{name}", len(content), hashlib.sha256(content).hexdigest())


def remote(commit: str, files: dict[str, bytes], expected_rows: int | None = None) -> RemoteConfig:
    listed = tuple(remote_file(name, content) for name, content in files.items())
    return RemoteConfig(REPO, CONFIG, commit, listed, expected_rows)


def published(state: RemoteConfig, rows: int = 10, generation: str = "aaaa-1") -> Manifest:
    """The manifest a successful first sync of `state` would leave."""
    plan = plan_sync(None, state)
    return manifest_after(
        plan,
        None,
        state,
        generation=generation,
        rows={f.name: rows for f in plan.to_fetch},
        schema_json=schema_to_json(expected_schema(CONFIG)),
        validated_at="2026-01-02T03:04:05Z",
    )


V1 = {"a.parquet": b"a1", "b.parquet": b"b1", "c.parquet": b"c1"}


def test_first_sync_plans_every_file_as_added() -> None:
    plan = plan_sync(None, remote("c1", V1))
    assert [f.name for f in plan.added] == sorted(V1)
    assert (plan.changed, plan.removed, plan.unchanged) == ((), (), ())
    assert plan.bytes_to_fetch == sum(len(v) for v in V1.values())
    assert not plan.is_noop


def test_plan_sorts_files_into_added_changed_removed_unchanged() -> None:
    manifest = published(remote("c1", V1))
    plan = plan_sync(
        manifest, remote("c2", {"a.parquet": b"a1", "b.parquet": b"b2!", "d.parquet": b"d"})
    )
    assert plan.commit == "c2"
    assert [f.name for f in plan.added] == ["d.parquet"]
    assert [f.name for f in plan.changed] == ["b.parquet"]
    assert plan.removed == ("c.parquet",)
    assert plan.unchanged == ("a.parquet",)
    assert [f.name for f in plan.to_fetch] == ["b.parquet", "d.parquet"]
    assert plan.bytes_to_fetch == len(b"b2!") + len(b"d")


def test_a_new_commit_with_the_same_files_is_a_noop() -> None:
    manifest = published(remote("c1", V1))
    plan = plan_sync(manifest, remote("c2-touching-another-config", V1))
    assert plan.is_noop
    assert plan.to_fetch == ()
    assert plan.bytes_to_fetch == 0
    assert plan.unchanged == tuple(sorted(V1))


def test_same_sha256_with_another_size_counts_as_changed() -> None:
    manifest = published(remote("c1", V1))
    odd = RemoteFile(f"{CONFIG}/a.parquet", 999, hashlib.sha256(b"a1").hexdigest())
    state = RemoteConfig(REPO, CONFIG, "c2", (odd,), None)
    assert plan_sync(manifest, state).changed == (odd,)


def test_two_remote_files_with_one_name_are_refused() -> None:
    state = RemoteConfig(
        REPO,
        CONFIG,
        "c1",
        (
            RemoteFile(f"{CONFIG}/x/a.parquet", 1, "0" * 64),
            RemoteFile(f"{CONFIG}/y/a.parquet", 1, "1" * 64),
        ),
        None,
    )
    with pytest.raises(
        UpstreamError, match=r"x/a\.parquet.*y/a\.parquet|y/a\.parquet.*x/a\.parquet"
    ):
        plan_sync(None, state)


def test_manifest_after_keeps_unchanged_entries_and_renews_fetched_ones() -> None:
    first = published(remote("c1", V1), rows=10)
    state = remote(
        "c2", {"a.parquet": b"a1", "b.parquet": b"b2", "d.parquet": b"d"}, expected_rows=35
    )
    plan = plan_sync(first, state)
    second = manifest_after(
        plan,
        first,
        state,
        generation="c2-2",
        rows={"b.parquet": 12, "d.parquet": 13},
        schema_json=first.schema_json,
        validated_at="2026-02-01T00:00:00Z",
    )
    assert [e.name for e in second.entries] == ["a.parquet", "b.parquet", "d.parquet"]
    assert second.by_name["a.parquet"] == first.by_name["a.parquet"]
    assert second.by_name["b.parquet"].sha256 == hashlib.sha256(b"b2").hexdigest()
    assert second.by_name["b.parquet"].upstream_commit == "c2"
    assert second.by_name["d.parquet"].validated_at == "2026-02-01T00:00:00Z"
    assert (second.total_rows, second.card_expected_rows, second.upstream_commit) == (35, 35, "c2")
    assert plan_sync(second, state).is_noop


def test_manifest_after_requires_rows_for_every_fetched_file() -> None:
    state = remote("c1", V1)
    with pytest.raises(ValueError, match=r"c\.parquet"):
        manifest_after(
            plan_sync(None, state),
            None,
            state,
            generation="g-1",
            rows={"a.parquet": 1, "b.parquet": 1},
            schema_json=None,
            validated_at="2026-01-01T00:00:00Z",
        )


def test_drifted_files_unchanged_upstream_are_planned_to_be_fetched_again() -> None:
    """The audit no longer edits the manifest: the resync names the drifted files instead."""
    first = published(remote("c1", V1))
    state = remote("c2", {**V1, "c.parquet": b"c2"})
    plan = plan_sync(first, state, drifted={"b.parquet", "c.parquet"})
    assert [f.name for f in plan.repaired] == ["b.parquet"]  # c changed upstream: fetched anyway
    assert [f.name for f in plan.changed] == ["c.parquet"]
    assert plan.unchanged == ("a.parquet",)
    assert [f.name for f in plan.to_fetch] == ["b.parquet", "c.parquet"]
    assert not plan_sync(first, remote("c1", V1), drifted={"b.parquet"}).is_noop
    after = manifest_after(
        plan,
        first,
        state,
        generation="g-2",
        rows={"b.parquet": 10, "c.parquet": 10},
        schema_json=first.schema_json,
        validated_at="2026-01-03T00:00:00Z",
    )
    assert after.by_name["b.parquet"].upstream_commit == "c2"  # fetched and validated again
    assert after.by_name["b.parquet"].sha256 == first.by_name["b.parquet"].sha256
    assert after.by_name["a.parquet"] == first.by_name["a.parquet"]


def test_schema_serialization_round_trips_exactly() -> None:
    schema = expected_schema(CONFIG).with_metadata({b"origin": b"test"})
    text = schema_to_json(schema)
    assert schema_from_json(text).equals(schema, check_metadata=True)
    assert text == schema_to_json(schema_from_json(text))
    assert text != schema_to_json(pa.schema([pa.field("uuid", pa.string())]))


def test_no_manifest_before_the_first_sync(tmp_path: Path) -> None:
    assert load_manifest(Layout(tmp_path), CONFIG) is None


def test_saved_manifest_loads_equal(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    manifest = published(remote("c1", V1))
    save_manifest(layout, manifest)
    loaded = load_manifest(layout, CONFIG)
    assert loaded == manifest
    assert loaded is not None and loaded.schema is not None
    assert loaded.schema.equals(expected_schema(CONFIG))
    assert loaded.total_rows == 30


def test_entries_are_kept_sorted_by_name() -> None:
    entry = ManifestEntry("z.parquet", f"{CONFIG}/z.parquet", "0" * 64, 1, 1, "c", "t")
    other = ManifestEntry("a.parquet", f"{CONFIG}/a.parquet", "1" * 64, 1, 1, "c", "t")
    manifest = Manifest(CONFIG, REPO, "c", "g-1", None, None, "t", (entry, other))
    assert [e.name for e in manifest.entries] == ["a.parquet", "z.parquet"]


_CRASHING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import tol_dagster.store.durable as durable
    from tol_dagster.store.layout import Layout
    from tol_dagster.store.manifest import Manifest, save_manifest

    home, when = sys.argv[1], sys.argv[2]
    manifest = Manifest.from_json(sys.stdin.read())
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    if when == "before_rename":
        os.replace = die
    else:
        durable.fsync_dir = die
    save_manifest(Layout(Path(home)), manifest)
    """
)


@pytest.mark.parametrize(("when", "survivor"), [("before_rename", "old"), ("after_rename", "new")])
def test_a_save_killed_at_any_instant_leaves_one_whole_manifest(
    tmp_path: Path, when: str, survivor: str
) -> None:
    layout = Layout(tmp_path)
    old = published(remote("c1", V1))
    new = published(remote("c2", {"a.parquet": b"a2"}), generation="bbbb-2")
    save_manifest(layout, old)
    process = subprocess.run(
        [sys.executable, "-c", _CRASHING_SAVE, str(tmp_path), when],
        input=new.to_json(),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert load_manifest(layout, CONFIG) == {"old": old, "new": new}[survivor]
    leftovers = [p for p in layout.store_dir(CONFIG).iterdir() if p.name != "manifest.json"]
    assert len(leftovers) == (1 if when == "before_rename" else 0)
    save_manifest(layout, new)
    assert load_manifest(layout, CONFIG) == new


def test_an_interrupted_save_keeps_the_old_manifest_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    old = published(remote("c1", V1))
    save_manifest(layout, old)

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("tol_dagster.store.durable.os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        save_manifest(layout, published(remote("c2", {"a.parquet": b"a2"})))
    monkeypatch.undo()
    assert load_manifest(layout, CONFIG) == old
    assert [p.name for p in layout.store_dir(CONFIG).iterdir()] == ["manifest.json"]


_GARBAGE_IPC = base64.b64encode(b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"x" * 16).decode()


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        a_digit_changed,  # still a manifest: a file's sha256 changed
        lambda text: "",  # emptied
        lambda text: text.replace('"rows": 10', '"rows": "ten"', 1),  # wrong type
        lambda text: text.replace('"format": 1', '"format": 99'),  # unknown format
        lambda text: text.replace('"ipc": "', '"ipc": "!!', 1),  # not base64
        lambda text: re.sub(r'"ipc": "[^"]*"', f'"ipc": "{_GARBAGE_IPC}"', text),  # not a schema
        lambda text: "[]",  # not an object
    ],
)
def test_a_damaged_manifest_is_a_clear_error_naming_the_file_and_the_fix(
    tmp_path: Path, damage: Callable[[str], str]
) -> None:
    layout = Layout(tmp_path)
    save_manifest(layout, published(remote("c1", V1)))
    path = layout.manifest_path(CONFIG)
    path.write_text(damage(path.read_text()))
    with pytest.raises(StoreError) as caught:
        load_manifest(layout, CONFIG)
    message = str(caught.value)
    assert str(path) in message
    assert "tol-dagster sync" in message


def test_a_manifest_of_another_config_is_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    manifest = published(remote("c1", V1))
    layout.manifest_path("other").parent.mkdir(parents=True)
    layout.manifest_path("other").write_text(manifest.to_json())
    with pytest.raises(StoreError, match=f"describes config '{CONFIG}', not 'other'"):
        load_manifest(layout, "other")

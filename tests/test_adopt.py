"""`tol-dagster adopt PATH`: a folder `hf download --local-dir` wrote (by the real client, from
the local Hub) becomes a verified mirror, fetching only what the folder lacks or holds wrong.

The user downloaded upstream a while ago; since then upstream edited one file, added one and
removed one, and one local file was corrupted in place. Adopting must fetch exactly the edited,
added and corrupted files (counted by the server), publish a mirror equal to upstream, leave the
folder as it was (bytes, mtimes, modes), and refuse through the gate what it would refuse from a
download.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from huggingface_hub import snapshot_download
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    edit_upstream,
    file_names,
    mirror_view,
    set_card_rows,
    upstream_files,
    upstream_rows,
    user,
    valid_edit,
    write_upstream,
)

from tol_dagster.definitions import build_definitions
from tol_dagster.defs.keys import RESYNC_TAG, asset_key
from tol_dagster.defs.mirror.adoption import REPORT_KEY, adopt_job_name
from tol_dagster.devtools.sample import build_sample
from tol_dagster.hub.remote import RemoteConfig, RemoteFile
from tol_dagster.resync.adopt import Candidate, _classify
from tol_dagster.settings import Settings
from tol_dagster.store.generations import publish_generation
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.shared_files import LINKED, bring_in, record_shared
from tol_dagster.store.staging import stage_path
from tol_dagster.validation.checks import SORTED_BY_CONTRACT_KEY

__all__ = ["dagster_home", "user"]  # fixtures, imported to be found

#: Five files, so that some are adopted while others are edited, removed and corrupted.
SAMPLE = {"rows": 5000, "files": 5, "seed": 23, "row_group_size": 500}


@pytest.fixture(scope="module")
def five_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adopt-sample")
    build_sample(out, **SAMPLE)  # type: ignore[arg-type]
    return out


@pytest.fixture
def hub_root(five_files: Path, tmp_path: Path) -> Path:
    """The Hub's folder (overrides conftest's): a private copy of the five-file sample."""
    root = tmp_path / "hub_root"
    shutil.copytree(five_files, root)
    return root


def hf_download(user: User, local_dir: Path) -> Path:
    """What the dataset card tells users to run, by the real client against the local Hub."""
    snapshot_download(
        user.hub.repo_id,
        repo_type="dataset",
        allow_patterns=[f"{CONFIG}/*"],
        local_dir=local_dir,
        endpoint=user.hub.endpoint,
    )
    return local_dir


def folder_state(folder: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every file of the folder (hf's metadata too): sha256, size, mtime (ns) and mode."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        status = path.stat()
        found[path.relative_to(folder).as_posix()] = (
            sha256_file(path),
            status.st_size,
            status.st_mtime_ns,
            stat.S_IMODE(status.st_mode),
        )
    return found


def corrupt_in_place(path: Path) -> None:
    """Bytes changed in the middle of the file, its size kept (a bad sector, a botched edit)."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        chunk = handle.read(64)
        handle.seek(-len(chunk), os.SEEK_CUR)
        handle.write(bytes(b ^ 0xFF for b in chunk))


def report_of(user: User) -> dict[str, object]:
    """The adoption report of the latest `fetched` materialization, as the run recorded it."""
    event = user.instance().get_latest_materialization_event(asset_key(CONFIG, "fetched"))
    assert event is not None and event.asset_materialization is not None
    value = event.asset_materialization.metadata[REPORT_KEY]
    assert isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict)
    return value.value


def test_adopt_fetches_only_what_the_folder_lacks_and_leaves_it_untouched(
    user: User, tmp_path: Path
) -> None:
    data = hf_download(user, tmp_path / "data")
    local = data / CONFIG
    names = file_names(user.root)
    edited, corrupted, removed, *kept = names
    valid_edit(user.root, edited)
    upstream = user.folder
    added = removed.replace(".parquet", "-v2.parquet")  # sorts where the removed file did
    write_upstream(upstream / added, pq.read_table(upstream / removed).slice(0, 700))
    (upstream / removed).unlink()
    set_card_rows(user.root, upstream_rows(user.root))
    corrupt_in_place(local / corrupted)
    before = folder_state(data)
    user.reset_counts()

    outcome = user.tol("adopt", str(data))

    assert outcome.code == 0, outcome.text
    fetched = {edited, corrupted, added}
    assert user.requests()["lfs_get"] == len(fetched), user.requests()
    assert user.bytes_served() == sum((upstream / n).stat().st_size for n in fetched)
    view = mirror_view(user.layout)
    assert view.sha256s == upstream_files(user.root)
    assert folder_state(data) == before, "the adopted folder changed"
    for name in kept:  # hard links: the mirror holds the folder's very inodes, their mode kept
        assert view.files[name][1] == (local / name).stat().st_ino
    report = report_of(user)
    assert {e["name"] for e in report["adopted"]} == set(kept)  # type: ignore[index, union-attr]
    assert {e["name"] for e in report["fetched"]} == fetched  # type: ignore[index, union-attr]
    ignored = {e["path"]: e["reason"] for e in report["ignored"]}  # type: ignore[index, union-attr]
    assert set(ignored) == {f"{CONFIG}/{n}" for n in (edited, corrupted, removed)}
    assert "corrupt" in ignored[f"{CONFIG}/{corrupted}"]
    assert "stale" in ignored[f"{CONFIG}/{edited}"]
    assert f"{len(kept)} adopted" in outcome.out and "3 fetched" in outcome.out
    megabytes = user.bytes_served() / 1e6
    assert f": fetched 3 files ({megabytes:,.1f} MB," in outcome.out, "adopted files not fetched"

    valid_edit(user.root, kept[0])  # the next resync publishes the other adopted files again
    assert user.sync().code == 0
    assert folder_state(data) == before, "a later publish changed the adopted folder"


def test_a_second_adopt_of_the_same_folder_fetches_nothing(user: User, tmp_path: Path) -> None:
    data = hf_download(user, tmp_path / "data")
    assert user.tol("adopt", str(data)).code == 0
    user.reset_counts()

    outcome = user.tol("adopt", str(data), "--json")

    assert outcome.code == 0, outcome.text
    files = {k: v for k, v in user.requests().items() if k.startswith(("resolve", "lfs"))}
    assert files == dict.fromkeys(files, 0), user.requests()
    document = json.loads(outcome.out)
    facts = document["configs"][CONFIG]
    assert document["exit_code"] == 0 and facts["upstream_commit"] == user.hub.head_commit()
    totals = facts["adoption"]["totals"]
    assert totals["adopted"]["files"] == totals["fetched"]["files"] == 0
    assert totals["mirrored"]["files"] == len(file_names(user.root))
    run = user.instance().get_run_by_id(facts["run_id"])
    assert run is not None and run.tags.get(RESYNC_TAG) == CONFIG, "serialized like a resync"
    assert report_of(user) == facts["adoption"], "the run's metadata holds the printed report"


def test_the_adopt_job_takes_the_folder_from_its_launchpad_config(
    user: User, tmp_path: Path
) -> None:
    data = hf_download(user, tmp_path / "data")
    user.reset_counts()
    settings = Settings.from_env()
    job = build_definitions(settings).resolve_job_def(adopt_job_name(CONFIG))

    with dg.DagsterInstance.from_config(str(user.dagster_home)) as instance:
        result = job.execute_in_process(run_config={"path": str(data)}, instance=instance)

    assert result.success
    assert result.dagster_run.tags.get(RESYNC_TAG) == CONFIG
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)
    assert report_of(user)["totals"]["adopted"]["files"] == len(file_names(user.root))  # type: ignore[index]
    assert user.requests()["lfs_get"] == 0


def test_the_gate_refuses_an_adopted_copy_that_violates_the_contract(
    user: User, tmp_path: Path
) -> None:
    unsorted = file_names(user.root)[1]
    edit_upstream(user.folder / unsorted, lambda table: table.take(list(range(len(table)))[::-1]))
    data = hf_download(user, tmp_path / "data")
    before = folder_state(data)
    user.reset_counts()

    outcome = user.tol("adopt", str(data))

    assert outcome.code == 1, outcome.text
    assert SORTED_BY_CONTRACT_KEY in outcome.text
    assert user.requests()["lfs_get"] == 0, "every file was adopted, none downloaded"
    assert not user.layout.mirror_dir(CONFIG).exists(), "nothing was published"
    assert folder_state(data) == before


def test_copy_leaves_no_inode_shared_with_the_folder(user: User, tmp_path: Path) -> None:
    data = hf_download(user, tmp_path / "data")
    user.reset_counts()

    outcome = user.tol("adopt", str(data), "--copy")

    assert outcome.code == 0, outcome.text
    view = mirror_view(user.layout)
    assert view.sha256s == upstream_files(user.root)
    folder_inodes = {p.stat().st_ino for p in (data / CONFIG).glob("*.parquet")}
    assert not folder_inodes & {inode for _, inode in view.files.values()}
    assert user.requests()["lfs_get"] == 0
    published = user.layout.mirror_dir(CONFIG).glob("*.parquet")
    assert all(not p.stat().st_mode & 0o222 for p in published), "copies are the store's: read-only"


def test_a_path_that_is_not_a_folder_is_bad_input(user: User, tmp_path: Path) -> None:
    outcome = user.tol("adopt", str(tmp_path / "nowhere"))

    assert outcome.code == 2
    assert "is not a folder" in outcome.err


def _published_from_a_users_file(tmp_path: Path, mode: int) -> tuple[Layout, Path, Path]:
    """A user's file of `mode`, hard-linked into staging and published: (layout, the file, the
    generation)."""
    layout = Layout(tmp_path / "home")
    mine = tmp_path / "data" / "a.parquet"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's bytes")
    mine.chmod(mode)
    staged = stage_path(layout, CONFIG, "c1", mine.name)
    assert bring_in(mine, staged, copy=False) == LINKED
    record_shared(layout, CONFIG, [mine])
    return layout, mine, publish_generation(layout, CONFIG, commit="c1", files={mine.name: staged})


def test_publishing_leaves_a_users_mode_until_the_user_replaces_the_file(tmp_path: Path) -> None:
    layout, mine, first = _published_from_a_users_file(tmp_path, 0o644)

    assert stat.S_IMODE(mine.stat().st_mode) == 0o644, "publishing chmodded the user's file"
    replacement = mine.with_name(".a.parquet.incomplete")  # as `hf download` replaces a file
    replacement.write_bytes(b"newer bytes")
    os.replace(replacement, mine)
    second = publish_generation(layout, CONFIG, commit="c2", files={mine.name: first / mine.name})
    assert not (second / mine.name).stat().st_mode & 0o222, "the store's alone now: read-only"
    assert stat.S_IMODE(mine.stat().st_mode) == 0o644


def test_publishing_leaves_the_mode_of_a_users_file_moved_elsewhere(tmp_path: Path) -> None:
    """The user moved their folder: the recorded path is gone, the inode still theirs. Before,
    the next publish made their file read-only (the store held it alone, it thought)."""
    layout, mine, first = _published_from_a_users_file(tmp_path, 0o664)
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    record_shared(layout, CONFIG, [])  # another adopt meanwhile keeps the record too

    second = publish_generation(layout, CONFIG, commit="c2", files={mine.name: first / mine.name})

    assert stat.S_IMODE((moved / mine.name).stat().st_mode) == 0o664
    (moved / mine.name).unlink()  # the user deletes it: the store's alone now
    third = publish_generation(layout, CONFIG, commit="c3", files={mine.name: second / mine.name})
    assert not (third / mine.name).stat().st_mode & 0o222, "the store's alone: read-only"


def test_a_file_of_another_configs_folder_is_not_taken_for_this_ones_by_name(
    tmp_path: Path,
) -> None:
    """Adopting a folder holding both configs' folders listed each config's files under the
    other as "size … is not upstream's" (bad files, it read), matched by name alone."""
    remote = RemoteConfig("o/r", "cfgA", "c" * 40, (RemoteFile("cfgA/t.parquet", 10, "a" * 64),), 1)
    theirs = Candidate("cfgB/t.parquet", tmp_path / "cfgB" / "t.parquet", 11)
    ours = Candidate("cfgA/t.parquet", tmp_path / "cfgA" / "t.parquet", 11)
    _, ignored = _classify(tmp_path, [theirs, ours], {}, remote, remote.files, [])
    reasons = {entry.path: entry.reason for entry in ignored}
    assert reasons["cfgB/t.parquet"] == "in cfgB/, not cfgA/ (another config's?): not its name's"
    assert reasons["cfgA/t.parquet"] == "size 11 is not upstream's 10"

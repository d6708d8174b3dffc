"""Published files follow the process umask like any file `open()` makes: `mkstemp`'s 0600
would hide the mirror's manifest, the slices and the catalog from everyone else on a shared
server."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from resync_testing import CONFIG, User, dagster_home, user

from tol_dagster.store import durable

__all__ = ["dagster_home", "user"]  # fixtures, imported to be found


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test, read afresh by the code under test."""
    mask: int = request.param
    old = os.umask(mask)
    durable.process_umask.cache_clear()
    try:
        yield mask
    finally:
        os.umask(old)
        durable.process_umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_as_set(umask: int) -> None:
    assert durable.process_umask() == umask
    assert os.umask(umask) == umask, "reading the umask leaves it as it was"


def test_published_files_get_the_mode_the_umask_gives(user: User, umask: int) -> None:
    assert user.sync().code == 0
    outcome = user.tol("slice", "family=Felidae")
    assert outcome.code == 0, outcome.text
    layout = user.layout
    readable = 0o666 & ~umask  # 0644 under 022, 0640 under 027
    read_only = 0o444 & ~umask  # mirror files are shared by generations: never writable

    files = {
        "manifest": layout.manifest_path(CONFIG),
        "catalog": layout.catalog_path(CONFIG),
        "taxon index": layout.taxon_index_path(CONFIG),
        **{f"slice {p.name}": p for p in layout.slices_dir(CONFIG).glob("*.parquet")},
        **{f"summary {p.name}": p for p in layout.summary_dir(CONFIG).rglob("*") if p.is_file()},
    }
    assert any(name.startswith("slice ") for name in files)
    assert any(name.startswith("summary ") for name in files)
    wrong = {name: oct(mode(path)) for name, path in files.items() if mode(path) != readable}
    assert not wrong, f"expected {oct(readable)}: {wrong}"

    mirror_files = sorted(layout.mirror_dir(CONFIG).glob("*.parquet"))
    assert mirror_files
    wrong = {p.name: oct(mode(p)) for p in mirror_files if mode(p) != read_only}
    assert not wrong, f"expected {oct(read_only)}: {wrong}"

"""Slice commands started at the same instant on one data home (two people, two terminals, a
cron job beside a user): each succeeds, and what is published is whole and consistent, every
catalog row naming the bytes its file holds."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from resync_testing import CONFIG, User, dagster_home, synced, synced_home, user
from together import at_the_same_instant

from tol_dagster.defs.published.partitions import add_slice_partition, slice_partition_keys
from tol_dagster.slices import records
from tol_dagster.slices.catalog_file import read_catalog
from tol_dagster.store.hashing import sha256_file

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

#: Two writers of one slice, a pass that writes it too (`family=Felidae` is a value of its
#: rank), and a pass of another rank.
COMMANDS = [
    ("slice", "family=Felidae"),
    ("slice", "family=Felidae"),
    ("slices", "add-rank", "family"),
    ("slices", "add-rank", "genus"),
]


def test_slices_and_ranks_started_at_the_same_instant_all_publish_whole(synced: User) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tol_dagster.cli.main", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in COMMANDS
    ]
    outputs = [p.communicate(timeout=600) for p in processes]

    assert [p.returncode for p in processes] == [0] * len(COMMANDS), outputs
    layout = synced.layout
    rows = read_catalog(layout, CONFIG).to_pylist()
    names = [row["name"] for row in rows]
    ranked = {
        str(r["name"])
        for r in records.slice_records(layout, CONFIG)
        if r.get("rank") in ("family", "genus")
    }
    assert len(ranked) > 300 and "family=Felidae" in ranked
    assert sorted(names) == sorted(ranked)
    for row in rows:
        assert sha256_file(row["path"]) == row["sha256"], f"{row['name']}: mixed writers"
        assert pq.read_metadata(row["path"]).num_rows == row["rows"]
    leftovers = [p.name for p in layout.slices_dir(CONFIG).iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary files left: {leftovers[:5]}"


def test_commands_adding_one_new_slice_key_at_the_same_instant_all_succeed(
    tmp_path: Path,
) -> None:
    """SQLite (the default instance): Dagster inserts a new key after reading that it is
    missing, so of four commands adding it at once three used to fail on its unique index
    (exit 70). Four instances on one DAGSTER_HOME, as four processes, on twenty new keys."""
    instances = [dg.DagsterInstance.local_temp(str(tmp_path)) for _ in range(4)]
    keys = [f"family=F{n}" for n in range(20)]
    failures: list[BaseException] = []
    for key in keys:
        failures += at_the_same_instant(
            [partial(add_slice_partition, instance, CONFIG, key) for instance in instances]
        )
    assert not failures, failures[:2]
    assert sorted(slice_partition_keys(instances[0], CONFIG)) == sorted(keys)

"""What each published derived table held when it was published: its sha256 and size, and
which file it was (device, inode, size, mtime), kept in the config's state folder.

The mirror has its manifest and the slices their catalog; the summaries, the taxon index and
the centroids had nothing to be compared with, so bit rot or an edit in them went unseen until
a page no longer decoded (and a flipped digit of a count decodes). Each build records a table
right after publishing it, hashed from the file itself (bytes just written, in the page cache)
or, for the centroids, as they were written (the largest table, hashed while the next chunk is
summed); `table_audit` compares the file with its record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tol_dagster.store.durable import file_lock, write_atomic
from tol_dagster.store.hashing import file_version, sha256_of_one_version
from tol_dagster.store.layout import Layout

#: The records' folder under the config's state folder.
RECORDS_DIR = "published-tables"


@dataclass(frozen=True)
class TableRecord:
    """A published table as its build left it: its bytes' sha256 and size, the file that held
    them (`file_version`), when it was recorded."""

    path: str
    sha256: str
    bytes: int
    version: tuple[int, int, int, int]
    recorded_at: float

    def holds(self, size: int, sha256: str) -> bool:
        return self.bytes == size and self.sha256 == sha256


def record_path(layout: Layout, config: str, table: str) -> Path:
    """Where the record of `table` (`summary/lineage`, `taxon_index`, ...) is kept."""
    return layout.state_dir(config) / RECORDS_DIR / f"{table.replace('/', '.')}.json"


def record_table(
    layout: Layout,
    config: str,
    table: str,
    path: Path,
    written: tuple[os.stat_result, str] | None = None,
) -> None:
    """Record the table just published at `path`, hashed from the file, or as it was written
    (`written`: `HashingWriter.written` of the file renamed to `path`). Not when another
    publish replaced it meanwhile: the lock orders the records, the last publish's is kept."""
    stat, sha256 = written or sha256_of_one_version(path)
    record = TableRecord(str(path), sha256, stat.st_size, file_version(stat), time.time())
    target = record_path(layout, config, table)
    with file_lock(target.with_suffix(".lock")):
        if file_version(path.stat()) == record.version:
            write_atomic(target, json.dumps(asdict(record), indent=1).encode())


def load_record(layout: Layout, config: str, table: str) -> TableRecord | None:
    """The record of `table`; None if none was kept (a table published before records were).
    ValueError names a record that does not read."""
    path = record_path(layout, config, table)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TableRecord(**{**data, "version": tuple(data["version"])})
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the record {path} is damaged ({error})") from error

"""What a resync changed, by uuid: rows added and removed per taxon between two generations.

A file whose sha256 is in both generations holds the same rows in both, so only the files that
left (old side) and the files that arrived (new side) are read, and only `uuid` and the rank
columns of them. A row whose uuid kept its lineage is unchanged; a uuid whose lineage changed
counts as removed from its old taxon and added to its new one (`relabelled` counts those).
The diff of the last published resync is kept under `Layout.state_dir` for `tol-dagster status`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tol_dagster import duck
from tol_dagster.resync.publish import Published
from tol_dagster.schema import RANKS, quote_ident
from tol_dagster.store.durable import write_atomic
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.rebuildable import read_rebuildable

_RANKS_SQL = ", ".join(quote_ident(rank) for rank in RANKS)
#: Ranks shown in the markdown table (the full lineage stays in `taxa`).
_SHOWN = ("family", "genus", "species")


@dataclass(frozen=True)
class RevisionDiff:
    """Rows added and removed between two generations, in total (by uuid) and per lineage."""

    added: int
    removed: int
    relabelled: int
    files_read: tuple[str, ...]
    #: kingdom..species, added, removed: one row per lineage that changed, most changed first.
    taxa: pa.Table

    def to_markdown(self, limit: int = 20) -> str:
        """A short report for Dagster metadata: totals, then the `limit` most changed taxa."""
        lines = [
            f"**+{self.added:,} / -{self.removed:,} rows** by uuid "
            f"({self.relabelled:,} relabelled), from {len(self.files_read)} changed files",
        ]
        if self.taxa.num_rows:
            lines += ["", f"| {' | '.join(_SHOWN)} | added | removed |", "|---" * 5 + "|"]
            for row in self.taxa.slice(0, limit).to_pylist():
                names = " | ".join(_cell(row[rank]) for rank in _SHOWN)
                lines.append(f"| {names} | {row['added']:,} | {row['removed']:,} |")
            if self.taxa.num_rows > limit:
                lines.append(f"\n… and {self.taxa.num_rows - limit:,} more taxa")
        return "\n".join(lines)

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """A JSON-able summary for `tol-dagster status`: totals and the most changed taxa."""
        taxa = self.taxa if limit is None else self.taxa.slice(0, limit)
        return {
            "added": self.added,
            "removed": self.removed,
            "relabelled": self.relabelled,
            "files_read": list(self.files_read),
            "taxa_changed": self.taxa.num_rows,
            "taxa": taxa.to_pylist(),
        }


def diff_generations(old: Sequence[MirrorFile], new: Sequence[MirrorFile]) -> RevisionDiff:
    """Compare two generations of one config, reading only the files that differ."""
    kept = {f.sha256 for f in old} & {f.sha256 for f in new}
    gone = [f for f in old if f.sha256 not in kept]
    arrived = [f for f in new if f.sha256 not in kept]
    with duck.cursor() as con:
        con.execute(f"CREATE TEMP TABLE old_rows AS {_rows_sql(gone)}", _paths(gone))
        con.execute(f"CREATE TEMP TABLE new_rows AS {_rows_sql(arrived)}", _paths(arrived))
        totals = con.sql(
            """
            SELECT
              (SELECT count(*) FROM (SELECT uuid FROM new_rows EXCEPT SELECT uuid FROM old_rows)),
              (SELECT count(*) FROM (SELECT uuid FROM old_rows EXCEPT SELECT uuid FROM new_rows)),
              (SELECT count(*) FROM (
                  SELECT uuid FROM (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows)
                  INTERSECT SELECT uuid FROM old_rows))
            """
        ).fetchall()[0]
        # EXCEPT compares NULLs as equal, so NULL holes in a lineage match themselves.
        taxa = con.sql(
            f"""
            WITH added AS (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows),
                 removed AS (SELECT * FROM old_rows EXCEPT SELECT * FROM new_rows),
                 changes AS (
                    SELECT {_RANKS_SQL}, 1 AS a, 0 AS r FROM added
                    UNION ALL SELECT {_RANKS_SQL}, 0, 1 FROM removed)
            SELECT {_RANKS_SQL}, sum(a)::BIGINT AS added, sum(r)::BIGINT AS removed
            FROM changes GROUP BY ALL
            ORDER BY added + removed DESC, {_RANKS_SQL}
            """
        ).to_arrow_table()
    return RevisionDiff(
        added=totals[0],
        removed=totals[1],
        relabelled=totals[2],
        files_read=tuple(f.name for f in [*gone, *arrived]),
        taxa=taxa,
    )


def _rows_sql(files: Sequence[MirrorFile]) -> str:
    """The distinct (uuid, lineage) rows of `files`; an empty, typed relation for no files."""
    if files:
        return f"SELECT DISTINCT uuid, {_RANKS_SQL} FROM read_parquet(?)"
    nulls = ", ".join(f"NULL::VARCHAR AS {quote_ident(c)}" for c in ("uuid", *RANKS))
    return f"SELECT {nulls} WHERE false"


def _paths(files: Sequence[MirrorFile]) -> list[list[str]]:
    return [[str(f.path) for f in files]] if files else []


def _cell(value: str | None) -> str:
    """A markdown table cell: NULL shown as an em dash, pipes escaped."""
    return "—" if value is None else value.replace("|", "\\|")


# --- what a published resync changed, kept for `status` -------------------------------------------


def _revision_diff_path(layout: Layout, config: str) -> Path:
    return layout.state_dir(config) / "revision_diff.json"


def record_revision_diff(layout: Layout, config: str, published: Published) -> RevisionDiff | None:
    """Rows added and removed per taxon by the resync just published (reads changed files only)."""
    previous = published.previous
    if published.changed and previous is None:
        first = {"to_commit": published.commit, "first_generation": True}
        document = {**first, "added": published.manifest.total_rows, "removed": 0}
        write_atomic(_revision_diff_path(layout, config), json.dumps(document, indent=1).encode())
    if not published.changed or previous is None:
        return None
    old_dir = layout.generations_dir(config) / previous.generation
    if not old_dir.is_dir():
        return None
    new_dir = layout.generations_dir(config) / published.generation  # not the symlink: pinned
    old = [MirrorFile(e.name, e.sha256, old_dir / e.name) for e in previous.entries]
    new = [MirrorFile(e.name, e.sha256, new_dir / e.name) for e in published.manifest.entries]
    diff = diff_generations(old, new)
    document = {
        "from_commit": previous.upstream_commit,
        "to_commit": published.commit,
        **diff.to_dict(limit=200),
    }
    write_atomic(_revision_diff_path(layout, config), json.dumps(document, indent=1).encode())
    return diff


def describe_change(published: Published, diff: RevisionDiff | None) -> str:
    """The rows a publish changed, in words for the mirror's metadata (markdown)."""
    if not published.changed:
        return "Already current: nothing published."
    if published.previous is None:
        return f"First generation: {published.manifest.total_rows:,} rows added."
    if diff is None:
        return (
            f"Rows {published.previous.total_rows:,} -> {published.manifest.total_rows:,}; the "
            f"generation before ({published.previous.generation}) is no longer on disk to "
            "compare by uuid."
        )
    return diff.to_markdown()


def last_revision_diff(layout: Layout, config: str) -> dict[str, object] | None:
    return read_rebuildable(_revision_diff_path(layout, config), _parse_diff)


def _parse_diff(text: str) -> dict[str, object]:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise TypeError(f"a JSON object, not {type(document).__name__}")
    return document

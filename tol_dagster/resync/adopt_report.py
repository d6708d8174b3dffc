"""What an adoption did: files adopted from the user's folder, fetched from the Hub, ignored.

One report for every audience: the command line prints its summary (or `--json`, its
`to_dict`), the `staged` asset puts both in its metadata, so a run launched from the UI shows
what the command prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from tol_dagster.resync.state import StagedState


@dataclass(frozen=True)
class ReportEntry:
    """One file of the report. `path` is relative to the adopted folder (for a fetched file:
    upstream's path); `name` the mirror's file it became; `how` linked or copied."""

    path: str
    size: int
    name: str | None = None
    how: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AdoptionReport:
    config: str
    commit: str
    source: str
    #: Files of the folder whose sha256 is upstream's, brought into staging.
    adopted: tuple[ReportEntry, ...] = ()
    #: Files of the folder whose upstream file the mirror (or staging) already holds verified.
    mirrored: tuple[ReportEntry, ...] = ()
    #: Files of the folder left alone: their bytes are no file the mirror needs.
    ignored: tuple[ReportEntry, ...] = ()
    #: Upstream files the resync then fetched from the Hub (missing or different in the folder).
    fetched: tuple[ReportEntry, ...] = ()
    hashed_files: int = 0
    hashed_bytes: int = 0
    hash_seconds: float = 0.0
    threads: int = 1

    def with_fetched(self, state: StagedState) -> AdoptionReport:
        """The report completed by the resync that followed: every file it staged that was not
        adopted came from the Hub (in this run, or staged by an earlier attempt)."""
        adopted = {e.name for e in self.adopted}
        fetched = tuple(
            ReportEntry(f.path, f.size, name=f.name) for f in state.fetched if f.name not in adopted
        )
        return replace(self, fetched=fetched, commit=state.commit)

    @property
    def hash_mb_per_s(self) -> float:
        return self.hashed_bytes / 1e6 / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def totals(self) -> dict[str, dict[str, int]]:
        """Files and bytes of each kind."""
        kinds = {
            "adopted": self.adopted,
            "fetched": self.fetched,
            "ignored": self.ignored,
            "mirrored": self.mirrored,
        }
        return {
            kind: {"files": len(entries), "bytes": sum(e.size for e in entries)}
            for kind, entries in kinds.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "totals": self.totals(),
            "hash_mb_per_s": round(self.hash_mb_per_s, 1),
        }

    def summary(self) -> str:
        """One line: how many files and bytes of each kind."""
        totals = self.totals()

        def part(kind: str) -> str:
            return f"{totals[kind]['files']} {kind} ({totals[kind]['bytes'] / 1e6:,.1f} MB)"

        return (
            f"{self.config} @ {self.commit[:12]} from {self.source}: "
            f"{part('adopted')}, {part('fetched')}, {part('ignored')}, "
            f"{totals['mirrored']['files']} already in the mirror; hashed "
            f"{self.hashed_bytes / 1e6:,.1f} MB at {self.hash_mb_per_s:,.0f} MB/s "
            f"({self.threads} threads)"
        )

    def lines(self) -> list[str]:
        """The summary, then one line per file ignored, with why (the rest: `markdown`)."""
        return [self.summary(), *(f"  ignored {e.path}: {e.reason}" for e in self.ignored)]

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> AdoptionReport:
        """The report `to_dict` wrote (as a run's metadata holds it)."""
        kinds = ("adopted", "mirrored", "ignored", "fetched")
        fields = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        entries = {k: tuple(ReportEntry(**e) for e in document[k]) for k in kinds}
        return cls(**{**fields, **entries})

    def markdown(self, limit: int = 200) -> str:
        """The per-file table for the UI."""
        rows = [
            *(("adopted", e.path, e.size, f"{e.how} as {e.name}") for e in self.adopted),
            *(
                ("fetched", e.path, e.size, "missing or different in the folder")
                for e in self.fetched
            ),
            *(("ignored", e.path, e.size, e.reason or "") for e in self.ignored),
        ]
        lines = [self.summary(), "", "| file | kind | MB | note |", "|---|---|---|---|"]
        for kind, path, size, note in rows[:limit]:
            lines.append(f"| {path} | {kind} | {size / 1e6:,.1f} | {note.replace('|', '/')} |")
        if len(rows) > limit:
            lines.append(f"| … {len(rows) - limit} more | | | |")
        return "\n".join(lines)

"""What a command tells when it ends: a short report for a person, one JSON document for a script.

The facts come from what the run left on disk (the manifest, the run's staged state, the
slice's record), not from the progress shown on the way. A JSON document always has
`command`, `exit_code`, `error` (the first line of the cause, null when it succeeded) and
`errors` (every line of it); `--json` prints exactly one, on stdout, success or failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tol_dagster.cli import verbosity
from tol_dagster.resync.state import load_staged
from tol_dagster.settings import Settings
from tol_dagster.slices import records
from tol_dagster.store.manifest import load_manifest


def print_document(command: str, code: int, errors: Sequence[str], **fields: Any) -> None:
    """The command's one JSON document on stdout."""
    document = {
        "command": command,
        "exit_code": code,
        "error": errors[0] if errors else None,
        "errors": list(errors),
        **fields,
    }
    print(json.dumps(document, indent=1, default=str), file=sys.stdout, flush=True)


def print_failure(lines: Sequence[str], outcome: str | None = None) -> None:
    """The cause first (`tol-dagster: ...`), then what it left as it was, then the rest."""
    if lines:
        print(f"tol-dagster: {lines[0]}", file=sys.stderr)
    if outcome:
        print(outcome, file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def say(line: str) -> None:
    """A line of the report on stdout, unless `--quiet` or `--json`."""
    if verbosity.chatty():
        print(line, flush=True)


def sync_facts(
    settings: Settings, config: str, run_id: str, code: int, seconds: float
) -> dict[str, Any]:
    """One config's sync: the mirror now, and what this run fetched and kept."""
    layout = settings.layout
    manifest = load_manifest(layout, config)
    staged = load_staged(layout, config, run_id)
    facts: dict[str, Any] = {"exit_code": code, "run_id": run_id, "seconds": round(seconds, 3)}
    if manifest is not None:
        facts |= {
            "upstream_commit": manifest.upstream_commit,
            "generation": manifest.generation,
            "files": len(manifest.entries),
            "rows": manifest.total_rows,
            "bytes": manifest.total_bytes,
            "mirror_path": str(layout.mirror_dir(config)),
        }
    if staged is not None:
        downloaded = [f for f in staged.files if f.downloaded]
        facts |= {
            "fetched_files": len(downloaded),
            "fetched_bytes": staged.bytes_fetched,
            "fetched_rows": sum(f.rows or 0 for f in downloaded),
            "kept_files": sum(f.status == "current" for f in staged.files),
            "removed_files": len(staged.removed),
            "download_seconds": round(staged.download_seconds, 3),
            "checks_passed": sum(staged.gate.values()),
            "checks": len(staged.gate),
        }
    return facts


def sync_report(config: str, facts: Mapping[str, Any]) -> None:
    """The person's report of a sync that succeeded: the mirror, then what this run did."""
    if "generation" not in facts:
        return
    say(
        f"{config}: mirror at {facts['upstream_commit'][:12]} ({facts['files']} files, "
        f"{facts['rows']:,} rows) in {facts['mirror_path']} [run {facts['run_id']}]"
    )
    if "fetched_files" in facts:
        say(
            f"  generation {facts['generation']}: fetched {facts['fetched_files']} files "
            f"({facts['fetched_bytes'] / 1e6:,.1f} MB, {facts['fetched_rows']:,} rows, "
            f"{facts['download_seconds']:,.1f} s), kept {facts['kept_files']} unchanged, "
            f"removed {facts['removed_files']}; {facts['checks_passed']}/{facts['checks']} "
            f"gate checks passed; {facts['seconds']:,.1f} s"
        )
    else:
        say(f"  generation {facts['generation']}: already up to date; {facts['seconds']:,.1f} s")


def slice_facts(
    settings: Settings, config: str, name: str, code: int, seconds: float
) -> dict[str, Any]:
    """One slice as published (its record), or only its path when it was not."""
    path = settings.layout.slices_dir(config)
    record = next(
        (r for r in records.slice_records(settings.layout, config) if r.get("name") == name), None
    )
    facts: dict[str, Any] = {"config": config, "key": name, "seconds": round(seconds, 3)}
    if code == 0 and record is not None:
        facts |= {k: record.get(k) for k in ("path", "rows", "bytes", "sha256", "generation")}
        facts["upstream_commit"] = record.get("upstream_commit")
    else:
        facts["slices_dir"] = str(path)
    return facts


def slice_report(facts: Mapping[str, Any]) -> None:
    """The person's report of a slice that was published."""
    if facts.get("rows") is None:
        return
    say(
        f"{facts['config']}: slice {facts['key']}: {int(facts['rows']):,} rows, "
        f"{int(facts['bytes']) / 1e6:,.1f} MB, from generation {facts['generation']} "
        f"(upstream {str(facts['upstream_commit'])[:12]}); {facts['seconds']:,.1f} s"
    )

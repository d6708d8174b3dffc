"""The audit (the `mirror_matches_manifest` check): re-hash the published mirror against its
manifest and, given a client, the manifest against upstream.

A check with no side effect: it reads and reports, and writes nothing. The files it finds
drifted are named in its details (`drifted_files`); the next resync re-hashes them under its
lock and fetches again those still drifted (see `stage`), so an audit that races a publish can
never roll the newer generation back.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from tol_dagster.errors import UpstreamError
from tol_dagster.hub.client import HubClient
from tol_dagster.resync.plan import plan_summary, plan_sync
from tol_dagster.store.drift import audit_mirror
from tol_dagster.store.generations import current_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.validation.checks import CheckResult

AUDIT_CHECK = "mirror_matches_manifest"
#: The key of the check's details naming the drifted files of the manifest (what a resync reads).
DRIFTED_FILES = "drifted_files"
#: How often the audit re-reads the mirror and the manifest to find them describing one generation.
AUDIT_SNAPSHOT_TRIES = 5


def _audit_subject(layout: Layout, config: str) -> tuple[Path | None, Manifest | None]:
    """The current generation (resolved once) and the manifest that goes with it, read without
    the lock (a resync holds it for the whole download): re-read until the symlink did not move
    around the manifest's read."""
    for _ in range(AUDIT_SNAPSHOT_TRIES):
        before = _resolved_generation(layout, config)
        manifest = load_manifest(layout, config)
        if _resolved_generation(layout, config) == before:
            return before, manifest
    return before, manifest  # still moving: the audit reports the mismatch it finds


def _resolved_generation(layout: Layout, config: str) -> Path | None:
    current = current_generation(layout, config)
    return None if current is None else current.resolve()


def _superseded(layout: Layout, config: str, audited: Path | None) -> str | None:
    """What replaced the audited generation while it was hashed (None: nothing did)."""
    now = _resolved_generation(layout, config)
    if now == audited:
        return None
    return (
        f"superseded during audit: generation {audited.name if audited else 'none'} was "
        f"replaced by {now.name if now else 'none'} while it was hashed; the new generation "
        "is not audited yet (run the audit again)"
    )


def audit(
    layout: Layout,
    config: str,
    client: HubClient | None = None,
    *,
    only: Collection[str] | None = None,
) -> CheckResult:
    """Re-hash the mirror against the manifest and, given a client, the manifest against upstream.

    Reads only. Drifted files are reported by name (`DRIFTED_FILES` in the details): the next
    resync re-verifies them and fetches again those still drifted. `only`: re-hash just these
    files (what a resync just published: the cheap audit that follows every resync); every
    file is still looked for and its size compared."""
    generation, manifest = _audit_subject(layout, config)
    if manifest is None:
        return CheckResult(
            AUDIT_CHECK, False, f"{config}: no mirror yet; run `tol-dagster sync`", {}
        )
    report = audit_mirror(layout, config, manifest, generation=generation, only=only)
    problems = [f"{d.name}: {d.reason}" for d in report.drifted]
    drifted = sorted({d.name for d in report.drifted} & set(manifest.by_name))
    scope = (
        "every file re-hashed"
        if only is None
        else f"{len(set(only) & set(manifest.by_name))} files just published re-hashed, "
        f"all {len(manifest.entries)} sized"
    )
    details: dict[str, object] = {
        "scope": scope,
        "generation": generation.name if generation else None,
        "files_checked": report.files_checked,
        "bytes_hashed": report.bytes_hashed,
        "drifted": problems,
        DRIFTED_FILES: drifted,
    }
    notes = _upstream_note(manifest, client, config)
    if drifted:
        notes += (
            f"; the next resync re-verifies these {len(drifted)} drifted files and fetches "
            "them again"
        )
    superseded = _superseded(layout, config, generation)
    if superseded is not None:
        details["superseded"] = True
        notes += f"; {superseded}"
    if problems:
        return CheckResult(AUDIT_CHECK, False, "; ".join(problems[:10]) + notes, details)
    return CheckResult(
        AUDIT_CHECK,
        True,
        f"{report.files_checked} files match the manifest ({scope}){notes}",
        details,
    )


def _upstream_note(manifest: Manifest, client: HubClient | None, config: str) -> str:
    """How upstream differs from the manifest, if a client can ask it ("": no difference)."""
    if client is None:
        return ""
    try:
        plan = plan_sync(manifest, client.remote_config(config))
    except UpstreamError as error:
        return f"; upstream not compared: {error}"
    return "" if plan.is_noop else f"; upstream differs: {plan_summary(plan)}"

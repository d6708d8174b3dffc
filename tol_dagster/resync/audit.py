"""The audit (the `mirror_matches_manifest` check): re-hash the published mirror against its
manifest and, given a client, the manifest against upstream."""

from __future__ import annotations

from pathlib import Path

from tol_dagster.errors import UpstreamError
from tol_dagster.hub.client import HubClient
from tol_dagster.resync.plan import plan_summary, plan_sync
from tol_dagster.resync.state import config_lock
from tol_dagster.store.drift import audit_mirror
from tol_dagster.store.generations import current_generation
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest, save_manifest
from tol_dagster.validation.checks import CheckResult

AUDIT_CHECK = "mirror_matches_manifest"
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


def _record_drift(
    layout: Layout, config: str, audited: Path, manifest: Manifest, drifted: set[str]
) -> bool:
    """Drop `drifted` from the manifest so the next resync fetches them again, only if the
    mirror and the manifest are still the ones audited (compared under the lock): an audit
    never rolls back a generation published while it hashed. True if recorded."""
    with config_lock(layout, config):
        if (
            _resolved_generation(layout, config) != audited
            or load_manifest(layout, config) != manifest
        ):
            return False
        save_manifest(layout, manifest.without(drifted))
        return True


def _superseded(layout: Layout, config: str, audited: Path | None) -> str | None:
    """What replaced the audited generation while it was hashed (None: nothing did)."""
    now = _resolved_generation(layout, config)
    if now == audited:
        return None
    return (
        f"superseded during audit: generation {audited.name if audited else 'none'} was "
        f"replaced by {now.name if now else 'none'} while it was hashed; nothing was recorded, "
        "the new generation is not audited yet (run the audit again)"
    )


def audit(layout: Layout, config: str, client: HubClient | None = None) -> CheckResult:
    """Re-hash the mirror against the manifest and, given a client, the manifest against upstream.

    Read-only but for one case: drifted files are dropped from the manifest (so the next resync
    fetches them again), and only while the audited generation is still the published one."""
    generation, manifest = _audit_subject(layout, config)
    if manifest is None:
        return CheckResult(
            AUDIT_CHECK, False, f"{config}: no mirror yet; run `tol-dagster sync`", {}
        )
    report = audit_mirror(layout, config, manifest, generation=generation)
    problems = [f"{d.name}: {d.reason}" for d in report.drifted]
    behind = ""
    if client is not None:
        try:
            plan = plan_sync(manifest, client.remote_config(config))
            if not plan.is_noop:
                behind = f"; upstream differs: {plan_summary(plan)}"
        except UpstreamError as error:
            behind = f"; upstream not compared: {error}"
    details: dict[str, object] = {
        "generation": generation.name if generation else None,
        "files_checked": report.files_checked,
        "bytes_hashed": report.bytes_hashed,
        "drifted": problems,
    }
    drifted = {d.name for d in report.drifted} & set(manifest.by_name)
    recorded = (
        generation is not None
        and bool(drifted)
        and _record_drift(layout, config, generation, manifest, drifted)
    )
    if recorded:
        behind += f"; the next resync fetches {len(drifted)} drifted files again"
    superseded = None if recorded else _superseded(layout, config, generation)
    if superseded is not None:
        details["superseded"] = True
        behind += f"; {superseded}"
    elif drifted and not recorded:
        behind += "; the manifest changed during the audit (another audit?): nothing was recorded"
    if problems:
        return CheckResult(AUDIT_CHECK, False, "; ".join(problems[:10]) + behind, details)
    return CheckResult(
        AUDIT_CHECK, True, f"{report.files_checked} files match the manifest{behind}", details
    )

"""The gate: blocking checks on the staged candidate, one result per check.

Turns the per-file facts (cached when each file was inspected) plus cheap cross-file facts into
one result per check. Reads fetched files from staging and unchanged ones from one pinned
generation, never through the mirror's symlink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.errors import ValidationFailed
from tol_dagster.resync.facts import additive_extension, cached_facts
from tol_dagster.resync.state import (
    StagedState,
    candidate_path,
    pin_current,
    save_staged,
)
from tol_dagster.schema import expected_schema
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import Manifest, load_manifest
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.store.pins import PinnedGeneration
from tol_dagster.store.staging import stage_path
from tol_dagster.validation import checks
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.contract import check_schema
from tol_dagster.validation.emb_unchanged import check_emb_unchanged
from tol_dagster.validation.file_facts import FileFacts
from tol_dagster.validation.row_counts import check_row_loss, check_rows_match_card
from tol_dagster.validation.sort_order import check_sorted_across
from tol_dagster.validation.uuid_index import check_uuid_unique_across

#: The gate: blocking checks on the staged state, by name, with what each asserts.
GATE_CHECKS: dict[str, str] = {
    checks.SHA256_MATCHES_UPSTREAM: "Every fetched file's bytes on disk, hashed again after the download, have the Hub's LFS oid as sha256.",
    checks.FOOTER_READS: "Every file's parquet footer reads.",
    checks.SCHEMA_MATCHES_CONTRACT: "Schema equals the config's contract (names, order, types, emb width).",
    checks.SCHEMA_MATCHES_LAST_VALIDATED: "Schema equals the last validated one, unless the change was accepted.",
    checks.ROWS_MATCH_FOOTER: "Rows read equal the footer's row count.",
    checks.ROWS_MATCH_CARD: "Total rows equal the dataset card's num_examples (when the card has one).",
    checks.ROW_LOSS_WITHIN_LIMIT: "Rows lost against the last validated state stay within TOL_MAX_ROW_LOSS.",
    checks.METADATA_EXPECTATIONS: "Great Expectations suite on the metadata columns.",
    checks.SORTED_BY_CONTRACT_KEY: "Rows sorted by the contract's key within files and across their boundaries.",
    checks.EMB_FINITE: "No NaN or Inf in emb.",
    checks.EMB_NORMS_WITHIN_BOUNDS: "Every fetched row's emb L2 norm and max |x| lie within the bounds the contract pins for the config.",
    checks.EMB_UNCHANGED_FOR_EXISTING_UUIDS: "No uuid of the last validated generation comes with different emb bytes, unless accepted (--accept-emb-change).",
    checks.UUID_UNIQUE: "uuid unique across the whole config.",
}


def run_gate(
    layout: Layout,
    state: StagedState,
    *,
    max_row_loss: float,
    accept_row_loss: bool = False,
    accept_schema_change: bool = False,
    accept_emb_change: bool = False,
) -> list[CheckResult]:
    """One result per gate check for the candidate generation; recorded in the staged state.

    Reads fetched files from staging and unchanged ones from one pinned generation, never
    through the mirror's symlink."""
    with pin_current(layout, state) as pinned:
        manifest = load_manifest(layout, state.config)
        facts = [cached_facts(layout, state.config, f.sha256) for f in state.files]
        per_file = {name: _combine(name, state, facts) for name in GATE_CHECKS}
        known = [
            f
            for f, staged in zip(facts, state.files, strict=True)
            if f is not None and staged.status != "failed"
        ]
        per_file[checks.SORTED_BY_CONTRACT_KEY] = _merge(
            per_file[checks.SORTED_BY_CONTRACT_KEY], check_sorted_across(known)
        )
        per_file.update(
            _schema_results(
                layout, state, pinned, per_file, manifest, known, accepted=accept_schema_change
            )
        )
        per_file.update(
            _row_results(layout, state, pinned, per_file, manifest, accepted=accept_emb_change)
        )
        per_file.update(_count_results(state, manifest, max_row_loss, accepted=accept_row_loss))
        results = [per_file[name] for name in GATE_CHECKS]
        state.gate = {r.check: r.passed for r in results}
        save_staged(layout, state)
        return results


def _schema_results(
    layout: Layout,
    state: StagedState,
    pinned: PinnedGeneration | None,
    per_file: dict[str, CheckResult],
    manifest: Manifest | None,
    known: list[FileFacts],
    *,
    accepted: bool,
) -> dict[str, CheckResult]:
    """The contract and the last validated schema, over every file of the candidate."""
    last_schema = manifest.schema if manifest else None
    return {
        checks.SCHEMA_MATCHES_CONTRACT: _contract(
            layout, state, pinned, per_file[checks.SCHEMA_MATCHES_CONTRACT], last_schema, accepted
        ),
        checks.SCHEMA_MATCHES_LAST_VALIDATED: _merge(
            _schema_stable(layout, state, last_schema, accepted=accepted),
            _schema_uniform(known),
        ),
    }


def _row_results(
    layout: Layout,
    state: StagedState,
    pinned: PinnedGeneration | None,
    per_file: dict[str, CheckResult],
    manifest: Manifest | None,
    *,
    accepted: bool,
) -> dict[str, CheckResult]:
    """uuid unique across the candidate; emb unchanged for the uuids the fetched files keep."""
    candidates = [
        MirrorFile(f.name, f.sha256, candidate_path(layout, state, f, pinned))
        for f in state.files
        if f.status != "failed"
    ]
    changed = {f.name for f in state.fetched}
    return {
        checks.UUID_UNIQUE: _merge(
            per_file[checks.UUID_UNIQUE],
            check_uuid_unique_across(changed, candidates, layout=layout, config=state.config),
        ),
        checks.EMB_UNCHANGED_FOR_EXISTING_UUIDS: check_emb_unchanged(
            _replaced_files(layout, state, manifest),
            [
                MirrorFile(f.name, f.sha256, candidate_path(layout, state, f, pinned))
                for f in state.fetched
            ],
            layout=layout,
            config=state.config,
            accepted=accepted,
        ),
    }


def _count_results(
    state: StagedState, manifest: Manifest | None, max_row_loss: float, *, accepted: bool
) -> dict[str, CheckResult]:
    """Total rows against the card and against the last validated state."""
    return {
        checks.ROWS_MATCH_CARD: _naming_files(
            check_rows_match_card(state.total_rows, state.expected_rows), manifest, state
        ),
        checks.ROW_LOSS_WITHIN_LIMIT: _naming_files(
            check_row_loss(
                manifest.total_rows if manifest else None,
                state.total_rows,
                max_row_loss,
                accepted=accepted,
            ),
            manifest,
            state,
        ),
    }


def _replaced_files(
    layout: Layout, state: StagedState, manifest: Manifest | None
) -> list[MirrorFile]:
    """The last validated generation's files that the candidate does not keep as they are
    (changed or removed upstream): the only ones whose rows a fetched file can hold anew. A
    file fetched again for drift has the same content: it replaces nothing."""
    if manifest is None:
        return []
    kept = {(f.name, f.sha256) for f in state.files if f.status != "failed"}
    folder = layout.generations_dir(state.config) / manifest.generation
    return [
        MirrorFile(e.name, e.sha256, folder / e.name)
        for e in manifest.entries
        if (e.name, e.sha256) not in kept
    ]


def _combine(check: str, state: StagedState, facts: list[FileFacts | None]) -> CheckResult:
    """The per-file results of `check` over the candidate: passes when every file passed."""
    failures: list[str] = []
    for staged, file_facts_ in zip(state.files, facts, strict=True):
        if file_facts_ is None:
            failures.append(f"{staged.name}: not checked ({staged.reason})")
            continue
        for result in file_facts_.results:
            if result.check == check and not result.passed:
                failures.append(result.message)  # names its file already
    if failures:
        return CheckResult(check, False, "; ".join(failures[:10]), {"failed_files": len(failures)})
    return CheckResult(check, True, f"{len(state.files)} files pass", {"files": len(state.files)})


def _schema_stable(
    layout: Layout, state: StagedState, last: pa.Schema | None, *, accepted: bool
) -> CheckResult:
    """Fetched files keep the last validated schema (read from their footers, not cached:
    the comparison depends on the manifest, not only on the file's bytes)."""
    check = checks.SCHEMA_MATCHES_LAST_VALIDATED
    if last is None:
        return CheckResult(check, True, "no validated schema yet (first sync)")
    failures = []
    for f in state.fetched:
        found = pq.read_schema(stage_path(layout, state.config, state.commit, f.name))
        result = check_schema(f.name, found, last, check)
        if not result.passed:
            failures.append(result)
    if not failures:
        return CheckResult(
            check, True, f"{len(state.fetched)} fetched files keep the last validated schema"
        )
    message = "; ".join(r.message for r in failures[:5])
    if accepted:
        return CheckResult(
            check, True, f"accepted (--accept-schema-change): {message}", failures[0].details
        )
    return CheckResult(
        check,
        False,
        f"{message}. If upstream changed the schema on purpose, rerun with --accept-schema-change",
        failures[0].details,
    )


def _contract(
    layout: Layout,
    state: StagedState,
    pinned: PinnedGeneration | None,
    per_file: CheckResult,
    last: pa.Schema | None,
    accepted: bool,
) -> CheckResult:
    """The contract check, except for files that only add columns to it, when that addition
    is accepted now (`--accept-schema-change`) or was accepted before (it is the last
    validated schema): then the extended schema is the config's contract from now on."""
    if per_file.passed:
        return per_file
    contract = expected_schema(state.config)
    refused = []
    for f in state.files:
        if f.status == "failed":
            continue
        found = pq.read_schema(candidate_path(layout, state, f, pinned))
        if found.equals(contract):
            continue
        if additive_extension(found, contract) and (
            accepted or (last is not None and found.equals(last))
        ):
            continue
        refused.append(check_schema(f.name, found, contract, per_file.check).message)
    if refused or any(f.status == "failed" for f in state.files):
        return (
            per_file
            if not refused
            else replace(
                per_file,
                message="; ".join(refused[:10])
                + (". If upstream added columns on purpose, rerun with --accept-schema-change"),
            )
        )
    return CheckResult(
        per_file.check,
        True,
        "files extend the contract with extra columns only: accepted"
        + (" (--accept-schema-change)" if accepted else " earlier (the last validated schema)"),
        per_file.details,
    )


def _schema_uniform(facts: list[FileFacts]) -> CheckResult:
    """Every file of the generation has one schema, so globs over the mirror read it whole."""
    check = checks.SCHEMA_MATCHES_LAST_VALIDATED
    schemas: dict[tuple[tuple[str, str], ...] | None, list[str]] = {}
    for f in facts:
        schemas.setdefault(f.schema, []).append(f.name)
    if len(schemas) <= 1:
        return CheckResult(check, True, "every file has the same schema")
    groups = "; ".join(f"{len(names)} files like {names[0]}" for names in schemas.values())
    return CheckResult(
        check,
        False,
        f"files disagree on the schema ({groups}): a mirror glob could not read them together; "
        "upstream is mid-change, wait for it to finish",
        {"groups": {names[0]: len(names) for names in schemas.values()}},
    )


def _naming_files(
    result: CheckResult, previous: Manifest | None, state: StagedState
) -> CheckResult:
    """A failed row-count check with the files whose row counts moved: a total names no file."""
    before = previous.by_name if previous else {}
    moved = [
        f"{f.name} ({before[f.name].rows:,} -> {f.rows or 0:,} rows)"
        if f.name in before
        else f"{f.name} (new, {f.rows or 0:,} rows)"
        for f in state.files
        if f.name not in before or before[f.name].rows != (f.rows or 0)
    ]
    moved += [
        f"{name} (removed, {before[name].rows:,} rows)" for name in state.removed if name in before
    ]
    if result.passed or not moved:
        return result
    shown = "; ".join(moved[:10]) + (f"; and {len(moved) - 10} more" if len(moved) > 10 else "")
    return replace(result, message=f"{result.message}. Rows changed in: {shown}")


def _merge(a: CheckResult, b: CheckResult) -> CheckResult:
    if a.passed and b.passed:
        return replace(a, details={**a.details, **b.details})
    message = "; ".join(r.message for r in (a, b) if not r.passed)
    return CheckResult(a.check, False, message, {**a.details, **b.details})


def gate_refusal(config: str, commit: str, refused: Sequence[CheckResult]) -> ValidationFailed:
    """The gate's verdict in one sentence: the checks that failed first, then what it means."""
    causes = "; ".join(f"{r.check}: {r.message}" for r in refused[:3])
    more = f" (and {len(refused) - 3} more checks)" if len(refused) > 3 else ""
    return ValidationFailed(
        f"{config}: the gate refused commit {commit[:12]}: {causes}{more}. Nothing was "
        "published: the mirror keeps its last validated generation. If upstream meant this "
        "change, resync with the matching --accept-row-loss, --accept-schema-change or "
        "--accept-emb-change; otherwise wait for upstream to fix it."
    )

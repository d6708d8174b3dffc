"""What a check of the validation gate reports, and the checks' public names.

The names are the Dagster check names the UI shows, so they read as the predicate they assert.
Kept apart from `validation` so that the modules computing single checks (expectations,
uuid_index, alignment) can share them without importing the whole gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SHA256_MATCHES_UPSTREAM = "sha256_matches_upstream"
FOOTER_READS = "footer_reads"
SCHEMA_MATCHES_CONTRACT = "schema_matches_contract"
SCHEMA_MATCHES_LAST_VALIDATED = "schema_matches_last_validated"
ROWS_MATCH_FOOTER = "rows_match_footer"
ROWS_MATCH_CARD = "rows_match_card"
ROW_LOSS_WITHIN_LIMIT = "row_loss_within_limit"
METADATA_EXPECTATIONS = "metadata_expectations"
SORTED_BY_CONTRACT_KEY = "sorted_by_contract_key"
EMB_FINITE = "emb_finite"
EMB_NORMS_WITHIN_BOUNDS = "emb_norms_within_bounds"
EMB_UNCHANGED_FOR_EXISTING_UUIDS = "emb_unchanged_for_existing_uuids"
UUID_UNIQUE = "uuid_unique"
CONFIGS_ALIGNED = "configs_aligned"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. `message` names the file and the reason; `details` is JSON-able."""

    check: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "passed": self.passed,
            "message": self.message,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(data["check"], bool(data["passed"]), data["message"], dict(data["details"]))


def not_run(check: str, name: str, reason: str) -> CheckResult:
    """A check that could not run counts as failed: the gate never passes what it did not see."""
    return CheckResult(check, False, f"{name}: not run: {reason}", {"not_run": True})

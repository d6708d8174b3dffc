"""Row counts: a file's rows read against its footer (`rows_match_footer`), the config's total
against the dataset card (`rows_match_card`), and the rows lost since the last validated state
(`row_loss_within_limit`). Totals move across upstream revisions, so none is hard-coded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tol_dagster.validation.checks import (
    ROW_LOSS_WITHIN_LIMIT,
    ROWS_MATCH_CARD,
    ROWS_MATCH_FOOTER,
    CheckResult,
)


def check_rows_match_footer(
    name: str,
    footer_rows: int,
    read: Mapping[str, int | str],
    *,
    not_ours: Collection[str] = (),
) -> CheckResult:
    """Every set of columns decoded (`read`: what -> rows it gave, or why it did not read)
    gave the footer's count. A reason in `not_ours` is another check's to report (a column the
    schema check finds missing), not a failure of this one."""
    details: dict[str, Any] = {"footer_rows": footer_rows, "read": dict(read)}
    problems = [
        count if isinstance(count, str) else f"{what} gave {count:,} rows"
        for what, count in read.items()
        if count != footer_rows and count not in not_ours
    ]
    if not problems:
        return CheckResult(
            ROWS_MATCH_FOOTER,
            True,
            f"{name}: read {footer_rows:,} rows, as the footer says",
            details,
        )
    return CheckResult(
        ROWS_MATCH_FOOTER,
        False,
        f"{name}: footer says {footer_rows:,} rows but "
        + "; ".join(problems)
        + ": the file is corrupt, fetch it again",
        details,
    )


def check_rows_match_card(total: int, expected: int | None) -> CheckResult:
    """The config's row total equals the dataset card's count, when the card states one."""
    details = {"rows": total, "card_rows": expected}
    if expected is None:
        return CheckResult(
            ROWS_MATCH_CARD, True, f"{total:,} rows; the card states no count to compare", details
        )
    if total == expected:
        return CheckResult(ROWS_MATCH_CARD, True, f"{total:,} rows, as the card says", details)
    return CheckResult(
        ROWS_MATCH_CARD,
        False,
        f"the files hold {total:,} rows but the card says {expected:,} "
        f"({total - expected:+,}): rows were dropped or added without the card",
        details,
    )


def check_row_loss(
    previous_total: int | None, new_total: int, max_share: float, accepted: bool
) -> CheckResult:
    """The new state loses at most `max_share` of the last validated state's rows, or is accepted."""
    lost = 0 if previous_total is None else max(0, previous_total - new_total)
    share = lost / previous_total if previous_total else 0.0
    details = {
        "previous_rows": previous_total,
        "rows": new_total,
        "lost_rows": lost,
        "lost_share": share,
        "max_share": max_share,
        "accepted": accepted,
    }
    if previous_total is None:
        return CheckResult(
            ROW_LOSS_WITHIN_LIMIT, True, f"{new_total:,} rows; no validated state before", details
        )
    summary = f"{lost:,} of {previous_total:,} rows lost ({share:.2%}; limit {max_share:.2%})"
    if share <= max_share:
        return CheckResult(ROW_LOSS_WITHIN_LIMIT, True, summary, details)
    if accepted:
        return CheckResult(ROW_LOSS_WITHIN_LIMIT, True, f"{summary}: accepted", details)
    return CheckResult(
        ROW_LOSS_WITHIN_LIMIT,
        False,
        f"{summary}: if upstream really removed them, rerun with --accept-row-loss or raise "
        "TOL_MAX_ROW_LOSS",
        details,
    )

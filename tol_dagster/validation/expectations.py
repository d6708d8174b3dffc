"""The Great Expectations suite on the metadata columns: declared, reportable row rules.

GX runs on pandas, so it only ever sees the few string columns its expectations name, never
`emb` (an `emb` column in pandas turns seconds into minutes). Heavy per-row work (sort order,
NaN in `emb`, uuid uniqueness within a file and across files) is done in pyarrow and numpy by
the other `validation` modules instead; uniqueness is `uuid_index`'s alone, so a duplicated
uuid fails one check (`uuid_unique`), which names its rows. GX is imported on first use (4-7 s) and one ephemeral context serves the whole process.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.schema import SOURCE_DATASETS
from tol_dagster.validation.checks import METADATA_EXPECTATIONS, CheckResult

#: A well-formed uuid: UUIDv4 with hyphens, or the 32 lowercase hex digits the oldest rows use.
UUID_PATTERN = (
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|[0-9a-f]{32})$"
)

#: Values that only land in `kingdom` when a row's columns shifted: timestamps and booleans.
COLUMN_SHIFT_PATTERNS = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}.*)?$",
    r"^(?i:true|false)$",
)

#: Unexpected values kept per expectation in the details (enough to see the pattern).
SAMPLE_SIZE = 5

#: Distinct values a column may have for its screen to test each in Python; more go to GX.
MAX_SCREENED_DISTINCT = 10_000


@dataclass(frozen=True)
class _Rule:
    """One expectation, described the way a user reads it in a failure message."""

    description: str
    column: str
    kind: str
    kwargs: dict[str, Any]


RULES: tuple[_Rule, ...] = (
    _Rule("uuid is not null", "uuid", "ExpectColumnValuesToNotBeNull", {}),
    _Rule("uuid is well formed", "uuid", "ExpectColumnValuesToMatchRegex", {"regex": UUID_PATTERN}),
    _Rule(
        "source_dataset is a known source (or NULL)",
        "source_dataset",
        "ExpectColumnValuesToBeInSet",
        {"value_set": list(SOURCE_DATASETS)},
    ),
    _Rule(
        "kingdom is not a column-shift value (timestamp, true/false)",
        "kingdom",
        "ExpectColumnValuesToNotMatchRegexList",
        {"regex_list": list(COLUMN_SHIFT_PATTERNS)},
    ),
)

#: The columns the suite reads; the only ones converted to pandas.
SUITE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(rule.column for rule in RULES))

_lock = threading.Lock()
_validation_definition: Any = None


def _validation() -> Any:
    """The process-wide validation definition; call with `_lock` held (GX is not thread-safe).

    A validation definition loads the dataframe once; `Batch.validate` would load (and
    fingerprint, ~0.5 s per 350k rows) it twice.
    """
    global _validation_definition
    if _validation_definition is None:
        # Imported on first use, not at the top: GX alone takes 4-7 s to import.
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas(name="tol").add_dataframe_asset(name="metadata")
        suite = context.suites.add(
            gx.ExpectationSuite(
                name="tol_metadata",
                expectations=[
                    getattr(gx.expectations, rule.kind)(
                        column=rule.column, description=rule.description, **rule.kwargs
                    )
                    for rule in RULES
                ],
            )
        )
        _validation_definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name="tol_metadata_per_file",
                data=asset.add_batch_definition_whole_dataframe("file"),
                suite=suite,
            )
        )
    return _validation_definition


def run_metadata_suite(table: pa.Table, *, label: str = "metadata") -> CheckResult:
    """Validate the suite's columns of `table` (one file's rows); `label` prefixes the message.

    Details hold, per expectation, its success, unexpected count and a few unexpected values.
    A column the table lacks fails its expectations (GX reports the missing column).
    """
    if all(_certainly_passes(rule, table) for rule in RULES):
        outcomes = [_passed(rule) for rule in RULES]
    else:
        outcomes = gx_outcomes(table)
    failed = [o for o in outcomes if not o["success"]]
    if not failed:
        message = (
            f"{label}: {len(outcomes)} metadata expectations passed on {table.num_rows:,} rows"
        )
    else:
        message = f"{label}: metadata expectations failed: " + "; ".join(
            _describe(o) for o in failed
        )
    return CheckResult(METADATA_EXPECTATIONS, not failed, message, {"expectations": outcomes})


def gx_outcomes(table: pa.Table) -> list[dict[str, Any]]:
    """Each expectation's outcome as GX reports it on the suite's columns of `table`."""
    columns = table.select([c for c in SUITE_COLUMNS if c in table.column_names])
    frame = columns.cast(_decoded(columns.schema)).to_pandas()  # strings, not categoricals
    with _lock:
        validation = _validation().run(batch_parameters={"dataframe": frame}, result_format="BASIC")
    outcomes = []
    for result in validation.results:
        config = result.expectation_config
        details = result.result or {}
        error = result.exception_info.get("exception_message") if result.exception_info else None
        outcomes.append(
            {
                "expectation": config.description or config.type,
                "column": config.kwargs.get("column"),
                "success": bool(result.success),
                "unexpected_count": int(details.get("unexpected_count") or 0),
                "unexpected_sample": [
                    _plain(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
                ],
                **({"error": str(error)} if error and not result.success else {}),
            }
        )
    return outcomes


def _decoded(schema: pa.Schema) -> pa.Schema:
    """`schema` with each dictionary-encoded column as its values' type."""
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )


def _passed(rule: _Rule) -> dict[str, Any]:
    """A rule's outcome worded as GX words a pass."""
    return {
        "expectation": rule.description,
        "column": rule.column,
        "success": True,
        "unexpected_count": 0,
        "unexpected_sample": [],
    }


def _certainly_passes(rule: _Rule, table: pa.Table) -> bool:
    """True only if GX would find no unexpected value of `rule` in `table` (see the module's
    docstring); False whenever in doubt: an empty table, a column missing or not of strings."""
    if table.num_rows == 0 or rule.column not in table.column_names:
        return False
    column = table.column(rule.column)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return False
    screen = _SCREENS.get(rule.kind)
    try:
        return screen is not None and screen(column, rule.kwargs)
    except (pa.ArrowException, ValueError, TypeError):  # a screen that cannot decide: GX will
        return False


def _distinct(column: pa.ChunkedArray) -> list[str] | None:
    """The column's distinct non-NULL values (those its rows use), or None if there are too
    many to test one by one."""
    values = pc.unique(column)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if len(values) > MAX_SCREENED_DISTINCT:
        return None
    return [v for v in values.to_pylist() if v is not None]


def _not_null(column: pa.ChunkedArray, kwargs: dict[str, Any]) -> bool:
    return column.null_count == 0


#: Patterns made only of anchors, literal letters and digits, bracket classes, counts,
#: alternation and non-capturing groups (no escapes such as `\d` or `\b`, no flags, no `.`):
#: on them RE2 matches a subset of what Python's `re.search` matches, so RE2's yes is Python's.
_PLAIN_PATTERN = re.compile(r"(?:[\^$()|\[\]{}\-,0-9A-Za-z]|\(\?:)*")


def _all_match(column: pa.ChunkedArray, kwargs: dict[str, Any]) -> bool:
    """RE2 matches every value, and the pattern is one where that implies Python's `re` does
    (UUID_PATTERN is first tried on the bytes, a chunk at a time: `_uuids_of_one_width`; RE2
    then reads only the chunks it could not certify, such as the row group where the 32-digit
    uuids begin)."""
    regex = kwargs["regex"]
    if regex == UUID_PATTERN:
        undecided = [c for c in column.chunks if not _uuids_of_one_width(c)]
        if not undecided:
            return True
        column = pa.chunked_array(undecided, column.type)
    if not _PLAIN_PATTERN.fullmatch(regex):
        return False
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return pc.all(pc.match_substring_regex(column, regex)).as_py() is not False


#: Where a hyphenated uuid holds its hyphens, its version digit ("4") and its variant digit.
_HYPHENS, _VERSION, _VARIANT = [8, 13, 18, 23], 14, 19


def _uuids_of_one_width(chunk: pa.Array) -> bool:
    """True only if every value matches UUID_PATTERN, decided on the bytes when the values are
    all 36 or all 32 characters and none is NULL (a file's usual case): ~14 ms for 350,000
    uuids where RE2 takes ~32. False means "ask RE2", not "does not match"."""
    string = pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)
    if not string or chunk.null_count or not len(chunk):
        return False
    offsets = np.frombuffer(
        chunk.buffers()[1], np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    )[chunk.offset : chunk.offset + len(chunk) + 1]
    width = int(offsets[1] - offsets[0])
    if width not in (32, 36) or not (np.diff(offsets) == width).all():
        return False
    values = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    values = values.reshape(len(chunk), width)
    hex_digit = (values - np.uint8(ord("0"))) < 10  # uint8 wraps below "0"
    hex_digit |= (values - np.uint8(ord("a"))) < 6
    if width == 32:
        return bool(hex_digit.all())
    hex_digit[:, _HYPHENS] = values[:, _HYPHENS] == ord("-")
    return bool(
        hex_digit.all()
        and (values[:, _VERSION] == ord("4")).all()
        and np.isin(values[:, _VARIANT], np.frombuffer(b"89ab", np.uint8)).all()
    )


def _all_in_set(column: pa.ChunkedArray, kwargs: dict[str, Any]) -> bool:
    distinct = _distinct(column)
    return distinct is not None and set(distinct) <= set(kwargs["value_set"])


def _none_match_list(column: pa.ChunkedArray, kwargs: dict[str, Any]) -> bool:
    """No distinct value matches any of the patterns, tested as pandas does (`re.search`)."""
    distinct = _distinct(column)
    patterns = [re.compile(regex) for regex in kwargs["regex_list"]]
    return distinct is not None and not any(p.search(v) for p in patterns for v in distinct)


#: A screen per expectation kind the suite uses (a kind without one always goes to GX).
_SCREENS: dict[str, Callable[[pa.ChunkedArray, dict[str, Any]], bool]] = {
    "ExpectColumnValuesToNotBeNull": _not_null,
    "ExpectColumnValuesToMatchRegex": _all_match,
    "ExpectColumnValuesToBeInSet": _all_in_set,
    "ExpectColumnValuesToNotMatchRegexList": _none_match_list,
}


def _describe(outcome: dict[str, Any]) -> str:
    if "error" in outcome:
        return f"{outcome['expectation']}: could not run ({outcome['error']})"
    sample = ", ".join(repr(v) for v in outcome["unexpected_sample"])
    return f"{outcome['expectation']}: {outcome['unexpected_count']:,} rows fail (e.g. {sample})"


def _plain(value: Any) -> Any:
    """A JSON-able value: pandas reports a missing value as NaN, which JSON cannot hold."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str | int | float | bool) else str(value)

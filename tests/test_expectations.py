"""The metadata suite reports what Great Expectations reports, whether GX runs or the file is
certified by the Arrow screens: a pass written without GX is word for word GX's pass, and a
value the screens cannot decide exactly goes to GX."""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tol_dagster.schema import DEFAULT_CONFIG, METADATA_COLUMNS
from tol_dagster.validation import expectations
from tol_dagster.validation.expectations import gx_outcomes, run_metadata_suite

GOOD_UUID = "0123abcd-0123-4abc-8def-0123456789ab"


def metadata(small_sample: Path) -> pa.Table:
    """The metadata columns of the sample's first file, as the gate reads them."""
    path = sorted((small_sample / DEFAULT_CONFIG).glob("*.parquet"))[0]
    return pq.read_table(path, columns=list(METADATA_COLUMNS))


def table_of(**columns: list[str | None]) -> pa.Table:
    """A suite-shaped table: good values wherever `columns` gives none, kingdom dictionary
    encoded as the real files have it."""
    rows = len(next(iter(columns.values()))) if columns else 3
    data: dict[str, pa.Array] = {
        "uuid": pa.array(columns.get("uuid", [GOOD_UUID] * rows), pa.string()),
        "source_dataset": pa.array(columns.get("source_dataset", ["gbif"] * rows), pa.string()),
        "kingdom": pa.array(
            columns.get("kingdom", ["Animalia"] * rows), pa.string()
        ).dictionary_encode(),
    }
    return pa.table(data)


def test_a_valid_file_passes_without_gx_and_exactly_as_gx_says(
    small_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = metadata(small_sample)
    expected = gx_outcomes(table)
    monkeypatch.setattr(expectations, "gx_outcomes", _must_not_run)
    result = run_metadata_suite(table, label="f.parquet")
    assert result.passed
    assert result.details["expectations"] == expected
    assert result.message == f"f.parquet: 4 metadata expectations passed on {table.num_rows:,} rows"


@pytest.mark.parametrize(
    "columns",
    [
        # Python's `$` matches before a final newline, RE2's does not: GX decides (it passes).
        {"uuid": [GOOD_UUID + "\n", GOOD_UUID, GOOD_UUID]},
        {"uuid": [GOOD_UUID.upper(), GOOD_UUID, GOOD_UUID]},
        {"uuid": [None, GOOD_UUID, GOOD_UUID]},
        {"uuid": [None, None, None]},
        # Python's `\d` takes any Unicode digit; `(?i)` folds case.
        {"kingdom": ["٢٠٢١-٠٣-٠٤", "Animalia", "Plantae"]},
        {"kingdom": ["2021-03-04\n", "Animalia", None]},
        {"kingdom": ["TRUE", "Animalia", "Plantae"]},
        {"kingdom": ["fal\u017fe", "Animalia", "Plantae"]},
        {"kingdom": [None, None, None]},
        {"source_dataset": [None, "gbif", "gbif"]},
        {"source_dataset": ["GBIF", "gbif", "gbif"]},
    ],
)
def test_the_result_is_gxs_on_values_the_screens_must_not_misjudge(
    columns: dict[str, list[str | None]],
) -> None:
    table = table_of(**columns)
    result = run_metadata_suite(table)
    outcomes = gx_outcomes(table)
    assert result.details["expectations"] == outcomes
    assert result.passed == all(o["success"] for o in outcomes)


def test_dictionary_entries_no_row_uses_are_not_judged() -> None:
    kingdom = pa.DictionaryArray.from_arrays(
        pa.array([0, 0, 0], pa.int32()), pa.array(["Animalia", "true"])
    )
    table = table_of().set_column(2, "kingdom", kingdom)
    assert run_metadata_suite(table).passed
    assert all(o["success"] for o in gx_outcomes(table))


@pytest.mark.parametrize("change", ["empty", "missing column", "not strings"])
def test_what_the_screens_cannot_read_goes_to_gx(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = table_of()
    if change == "empty":
        table = table.slice(0, 0)
    elif change == "missing column":
        table = table.drop_columns(["kingdom"])
    else:
        table = table.set_column(2, "kingdom", pa.array([1, 2, 3]))
    ran: list[pa.Table] = []
    monkeypatch.setattr(
        expectations, "gx_outcomes", lambda t: ran.append(t) or _must_not_run(t, raising=False)
    )
    run_metadata_suite(table)
    assert ran == [table]


def _must_not_run(table: pa.Table, *, raising: bool = True) -> list[dict[str, object]]:
    if raising:
        raise AssertionError("GX ran on a file the screens certify")
    return [expectations._passed(rule) for rule in expectations.RULES]


def test_a_pattern_re2_may_read_otherwise_than_python_goes_to_gx() -> None:
    """RE2's `\\b` is ASCII, Python's Unicode: between 'é' and 'x' only RE2 sees a boundary, so
    RE2's yes would certify a file GX (Python's `re`) fails."""
    regex = r"é\bx"
    values = pa.array(["éx"] * 3)
    assert pc.all(pc.match_substring_regex(values, regex)).as_py()
    assert not re.search(regex, "éx")
    rule = expectations._Rule("word", "uuid", "ExpectColumnValuesToMatchRegex", {"regex": regex})
    assert not expectations._certainly_passes(rule, pa.table({"uuid": values}))


def _uuid_like(rng: random.Random, hyphens: bool) -> str:
    """A uuid-shaped string, well formed or off by one character: often where the pattern
    wants a hyphen, the version "4" or a variant digit."""
    value = list(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    if rng.random() < 0.15:
        position = rng.choice([rng.randrange(len(value)), 8, 13, 14, 18, 19, 23])
        value[position] = rng.choice([*"0123456789abcdef-AFg48c", "é", " "])
    return "".join(value) if hyphens else "".join(c for c in value if c != "-")


def test_the_uuid_byte_screen_certifies_only_what_the_pattern_matches() -> None:
    """`_uuids_of_one_width` (the uuid rule's fast screen) says True only where every value
    matches UUID_PATTERN as Python's `re` reads it, and does say True for well-formed columns
    of one width, sliced or not, `string` or `large_string`."""
    rng = random.Random(7)
    pattern = re.compile(expectations.UUID_PATTERN)
    certified = 0
    for _ in range(2000):
        hyphens = rng.random() < 0.7
        values = [_uuid_like(rng, hyphens or rng.random() < 0.1) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.1:
            values[rng.randrange(len(values))] = None  # type: ignore[call-overload]
        kind = rng.choice([pa.string(), pa.large_string()])
        array = pa.array(["pad", *values], kind).slice(1)  # a slice: offsets not at 0
        matches = all(v is not None and pattern.search(v) for v in values)
        uniform = len({None if v is None else len(v) for v in values}) == 1
        if expectations._uuids_of_one_width(array):
            assert matches, values
            certified += 1
        else:
            assert not (matches and uniform and None not in values), values
    assert certified > 20  # the screen is used, not only ever refusing


@pytest.mark.parametrize("bad_chunk", [None, 0, 1, 2])
def test_the_uuid_rule_leaves_to_re2_only_the_chunks_the_byte_screen_cannot_certify(
    bad_chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row groups of hyphenated uuids are certified on their bytes; RE2 reads only the chunk
    mixing both widths (where the old 32-digit block begins), and a malformed uuid in any chunk,
    certified or not, fails the rule."""
    rng = random.Random(11)
    hyphenated = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(30)]
    chunks = [
        hyphenated[:10],
        hyphenated[10:20],
        hyphenated[20:25] + [u.replace("-", "") for u in hyphenated[25:]],
    ]
    if bad_chunk is not None:
        chunks[bad_chunk][3] = chunks[bad_chunk][3][:-1] + "g"
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks])
    read_by_re2: list[int] = []
    real = pc.match_substring_regex

    def counted(values: pa.ChunkedArray, pattern: str) -> pa.ChunkedArray:
        read_by_re2.append(len(values))
        return real(values, pattern)

    monkeypatch.setattr(expectations.pc, "match_substring_regex", counted)
    verdict = expectations._all_match(column, {"regex": expectations.UUID_PATTERN})
    assert verdict is (bad_chunk is None)
    assert read_by_re2 == (
        [20] if bad_chunk in (0, 1) else [10]
    )  # the mixed chunk, and a refused one

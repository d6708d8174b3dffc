"""The contract's row order: byte-wise ascending, NULLs last, said one way for all checks."""

from __future__ import annotations

import itertools
import random

import pyarrow as pa

from tol_dagster.schema import SORT_KEY
from tol_dagster.validation.sort_order import check_sorted_within, compare_values, sort_key_le

WIDTH = len(SORT_KEY)


def key(*values: str | None) -> tuple[str | None, ...]:
    return tuple(values) + (None,) * (WIDTH - len(values))


def test_values_compare_byte_wise_with_nulls_last() -> None:
    assert compare_values("B", "a") == -1  # upper case bytes sort first
    assert compare_values("z", "é") == -1  # non-ASCII after ASCII
    assert compare_values("Zygaena", None) == -1
    assert compare_values(None, "Abies") == 1
    assert compare_values(None, None) == 0


def test_sort_key_le_decides_at_the_first_differing_column() -> None:
    assert sort_key_le(
        key("gbif", "Animalia", "Chordata", "Aves"), key("gbif", "Animalia", "Chordata", None)
    )
    assert not sort_key_le(key("gbif", "Plantae"), key("gbif", "Animalia", "Zzz"))
    assert sort_key_le(key("gbif", "Animalia"), key("gbif", "Animalia"))
    assert not sort_key_le(key(None), key("eol"))


def test_the_vectorized_check_agrees_with_the_scalar_rule() -> None:
    """Random keys from a small alphabet (many ties and NULLs): both say the same."""
    rng = random.Random(3)
    alphabet = ["a", "B", "é", "ab", None]
    for _ in range(200):
        rows = [tuple(rng.choice(alphabet) for _ in SORT_KEY) for _ in range(rng.randint(2, 6))]
        table = pa.table(
            {c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(SORT_KEY)}
        )
        expected = all(sort_key_le(a, b) for a, b in itertools.pairwise(rows))
        result = check_sorted_within("t.parquet", table)
        assert result.passed == expected, (rows, result.message)
        if not expected:
            first = next(i for i in range(len(rows) - 1) if not sort_key_le(rows[i], rows[i + 1]))
            assert result.details["first_bad_row"] == first


def _dictionary_chunks(values: list[str | None], cut: int) -> pa.ChunkedArray:
    """`values` as two dictionary-encoded chunks split at `cut`, each with a dictionary of its
    own in reverse order and holding one value twice (as a damaged file's may)."""
    chunks = []
    for part in (values[:cut], values[cut:]):
        distinct = sorted({v for v in part if v is not None}, reverse=True)
        dictionary = [*distinct, *distinct[:1]]  # the first value twice
        position = {v: i for i, v in enumerate(dictionary[:-1])}
        if distinct:
            position[distinct[0]] = len(dictionary) - 1  # rows use the second copy
        indices = pa.array([None if v is None else position[v] for v in part], pa.int32())
        chunks.append(pa.DictionaryArray.from_arrays(indices, pa.array(dictionary, pa.string())))
    return pa.chunked_array(chunks)


def test_dictionary_encoded_keys_are_checked_as_their_values() -> None:
    """The gate reads the key columns dictionary-encoded, a dictionary per row group: the
    verdict, the first bad row and the NULL boundaries are those of the plain strings."""
    rng = random.Random(5)
    alphabet = ["a", "B", "é", "ab", None]
    for _ in range(200):
        rows = [tuple(rng.choice(alphabet) for _ in SORT_KEY) for _ in range(rng.randint(2, 7))]
        cut = rng.randint(0, len(rows))
        columns = [[r[i] for r in rows] for i in range(WIDTH)]
        plain = pa.table({c: pa.array(columns[i], pa.string()) for i, c in enumerate(SORT_KEY)})
        encoded = pa.table({c: _dictionary_chunks(columns[i], cut) for i, c in enumerate(SORT_KEY)})
        expected, found = check_sorted_within("t", plain), check_sorted_within("t", encoded)
        assert (found.passed, found.details) == (expected.passed, expected.details), rows

"""Slice keys: the grammar users type, its canonical names and file names, and the filters it
renders (values always bound as parameters, SQL and Arrow agreeing row for row)."""

from __future__ import annotations

import itertools
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pytest

from tol_dagster.errors import SliceSpecError
from tol_dagster.schema import SLICE_RANKS
from tol_dagster.slices.keys import (
    MAX_STEM_BYTES,
    SliceKey,
    arrow_mask,
    filter_columns,
    parse_slice_key,
    to_sql_filter,
)


def test_a_simple_key_names_its_rank_and_value() -> None:
    key = parse_slice_key("family=Felidae")
    assert key == SliceKey((("family", "Felidae"),))
    assert (key.name, key.rank, key.value, str(key)) == (
        "family=Felidae",
        "family",
        "Felidae",
        "family=Felidae",
    )


@pytest.mark.parametrize("rank", SLICE_RANKS)
def test_every_slice_rank_is_accepted(rank: str) -> None:
    assert parse_slice_key(f"{rank}=X").conditions == ((rank, "X"),)


@pytest.mark.parametrize(
    "value",
    [
        "Danaus plexippus",
        "Neomamiphodes gracilis (O'Shaughnessy, 2015)",
        'Morus "sp. 1"',
        "Bralinorago pallida Bolòs & Vigo",
        "Mentha × piperita",
        "x=y",
        " padded ",
        "50% of it",
        "漢字",
    ],
)
def test_values_keep_any_unicode_quotes_commas_parentheses_and_equals(value: str) -> None:
    key = parse_slice_key(f"scientific_name={value}")
    assert key.value == value
    assert parse_slice_key(key.name) == key
    assert unquote(key.file_name.removesuffix(".parquet")) == key.name
    assert "/" not in key.file_name


def test_a_path_key_is_canonical_from_the_top_rank_down() -> None:
    key = parse_slice_key("genus=Morus/kingdom=Animalia")
    assert key.name == "kingdom=Animalia/genus=Morus"
    assert (key.rank, key.value) == ("genus", "Morus")
    assert parse_slice_key("kingdom=Animalia/genus=Morus") == key
    assert parse_slice_key("scientific_name=Morus alba L./genus=Morus").rank == "scientific_name"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("genus=A%2FB", "A/B"),
        ("genus=A%2fB", "A/B"),
        ("genus=100%25", "100%"),
        ("genus=100%", "100%"),
        ("genus=a%2", "a%2"),
        ("genus=%252F", "%2F"),
    ],
)
def test_a_slash_in_a_value_is_written_percent_2F(text: str, value: str) -> None:
    key = parse_slice_key(text)
    assert key.value == value
    assert parse_slice_key(key.name) == key


@pytest.mark.parametrize(
    "value", ["/", "%", "%/", "%2/", "a%2F/b", "%25%2F%", "%%2F2F", "x/%25/%2f"]
)
def test_canonical_names_round_trip_whatever_the_value(value: str) -> None:
    key = SliceKey((("genus", value),))
    assert parse_slice_key(key.name) == key
    assert parse_slice_key(f"kingdom=K/{key.name}").value == value


def test_file_names_are_stable_reversible_and_short_enough() -> None:
    key = parse_slice_key("kingdom=Animalia/species=Danaus plexippus")
    assert key.file_name == "kingdom%3DAnimalia%2Fspecies%3DDanaus%20plexippus.parquet"
    long_a = parse_slice_key("scientific_name=" + "é" * 150 + "a")
    long_b = parse_slice_key("scientific_name=" + "é" * 150 + "b")
    assert long_a.file_name != long_b.file_name
    assert long_a.file_name == parse_slice_key(long_a.name).file_name
    assert len(long_a.file_name.encode()) <= MAX_STEM_BYTES + len(".parquet")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("tribe=Felini", "unknown rank 'tribe'"),
        ("Family=Felidae", "unknown rank 'Family'"),
        ("family =Felidae", "unknown rank 'family '"),
        ("family=", "empty value"),
        ("family=   ", "empty value"),
        ("Felidae", "has no '='"),
        ("", "empty slice key"),
        ("family=Felidae/", "has no '='"),
        ("/family=Felidae", "has no '='"),
        ("family=Felidae//genus=Felis", "has no '='"),
        ("family=Felidae/family=Canidae", "appears twice"),
    ],
)
def test_bad_keys_raise_slice_spec_error_saying_what_is_allowed(text: str, says: str) -> None:
    with pytest.raises(SliceSpecError) as raised:
        parse_slice_key(text)
    assert says in str(raised.value)
    assert "kingdom, phylum, class, order, family, genus, species, scientific_name" in str(
        raised.value
    )
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "code_point", "position"),
    [
        ("family=Fel\x07idae", "U+0007", 11),  # BEL (Cc)
        ("family=Felidae\n", "U+000A", 15),  # a trailing newline (Cc)
        ("\tfamily=Felidae", "U+0009", 1),  # before the rank
        ("genus=Pan\u200bthera", "U+200B", 10),  # zero-width space (Cf)
        ("genus=Panthera\u202e", "U+202E", 15),  # right-to-left override (Cf)
        ("genus=Pan\u2028thera", "U+2028", 10),  # line separator (Zl)
        ("genus=Pan\u2029thera", "U+2029", 10),  # paragraph separator (Zp)
        ("genus=Pan\ue000thera", "U+E000", 10),  # private use (Co)
        ("genus=Pan\ud800thera", "U+D800", 10),  # a lone surrogate (Cs)
        ("genus=Pan\U000effffthera", "U+EFFFF", 10),  # unassigned (Cn)
        ("kingdom=Animalia/genus=Mo\x00rus", "U+0000", 26),  # NUL inside a path key
        ("family=Felidae\x85", "U+0085", 15),  # NEL, a C1 control
    ],
)
def test_control_and_other_unprintable_characters_are_refused_by_code_point_and_position(
    text: str, code_point: str, position: int
) -> None:
    with pytest.raises(SliceSpecError) as raised:
        parse_slice_key(text)
    message = str(raised.value)
    assert f"character {position} is {code_point} " in message
    assert raised.value.exit_code == 2
    assert text[position - 1] == chr(int(code_point[2:], 16))


@pytest.mark.parametrize(
    "value", ["Felidae", "Mentha \u00d7 piperita", "Bolòs & Vigo", "漢字", "a\u00a0b", "\U0001f98b"]
)
def test_printable_unicode_and_spaces_stay_accepted(value: str) -> None:
    assert parse_slice_key(f"scientific_name={value}").value == value


def test_sql_filter_binds_every_value_and_quotes_keyword_columns() -> None:
    key = parse_slice_key("order=Primates/scientific_name=O'Brien; DROP TABLE x --")
    sql, params = to_sql_filter(key)
    assert sql == '"order" = ? AND "scientific_name" = ?'
    assert params == ["Primates", "O'Brien; DROP TABLE x --"]


def test_species_takes_the_binomial_split_at_the_first_space() -> None:
    sql, params = to_sql_filter(parse_slice_key("species=Mentha × piperita"))
    assert sql == '(("species" = ?) OR ("genus" = ? AND "species" = ?))'
    assert params == ["Mentha × piperita", "Mentha", "× piperita"]


# Rows covering epithet and binomial spellings, homonyms, NULL holes and look-alikes.
_ROWS = pa.table(
    {
        "kingdom": ["Animalia", "Plantae", "Animalia", None, "Animalia", "Animalia", "Animalia"],
        "genus": ["Danaus", "Danaus", None, "Danaus", "Danausx", "Danaus", "Morus"],
        "species": [
            "plexippus",
            "Danaus plexippus",
            "plexippus",
            None,
            "plexippus",
            "Danaus plexippus x",
            "bassanus",
        ],
        "scientific_name": ["a", "b", "a", None, "c", "d", "Morus bassanus (Linnaeus, 1758)"],
    }
)


def _matches_sql(key: SliceKey) -> list[int]:
    where, params = to_sql_filter(key)
    con = duckdb.connect()
    con.register("t", _ROWS.append_column("i", pa.array(range(_ROWS.num_rows))))
    return [
        row[0]
        for row in con.execute(f"SELECT i FROM t WHERE {where} ORDER BY i", params).fetchall()
    ]


def _matches_arrow(key: SliceKey) -> list[int]:
    table = _ROWS.append_column("i", pa.array(range(_ROWS.num_rows)))
    return table.filter(arrow_mask(key, table))["i"].to_pylist()


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("species=Danaus plexippus", [0, 1]),
        ("species=plexippus", [0, 2, 4]),
        ("genus=Danaus/species=plexippus", [0]),
        ("kingdom=Animalia/species=Danaus plexippus", [0]),
        ("genus=Danaus", [0, 1, 3, 5]),
        ("kingdom=Animalia/genus=Danaus", [0, 5]),
        ("scientific_name=Morus bassanus (Linnaeus, 1758)", [6]),
        ("species=Danaus plexippus x", [5]),
        ("kingdom=Fungi", []),
    ],
)
def test_sql_and_arrow_filters_keep_the_same_rows(text: str, rows: list[int]) -> None:
    key = parse_slice_key(text)
    assert _matches_sql(key) == rows
    assert _matches_arrow(key) == rows


def test_sql_and_arrow_filters_agree_on_every_small_combination() -> None:
    values = {"kingdom": ["Animalia", "Plantae"], "genus": ["Danaus", "Morus"]}
    species = ["plexippus", "Danaus plexippus", "bassanus"]
    for (kingdom, genus), sp in itertools.product(
        itertools.product(values["kingdom"], values["genus"]), species
    ):
        for conditions in ([("species", sp)], [("kingdom", kingdom), ("genus", genus)],
                           [("kingdom", kingdom), ("species", f"{genus} {sp}")]):  # fmt: skip
            key = parse_slice_key("/".join(f"{r}={v}" for r, v in conditions))
            assert _matches_sql(key) == _matches_arrow(key), key.name


def test_filter_columns_are_what_the_filter_reads() -> None:
    assert filter_columns(parse_slice_key("family=Felidae")) == ["family"]
    key = parse_slice_key("species=Danaus plexippus/kingdom=Animalia")
    assert filter_columns(key) == ["kingdom", "species", "genus"]

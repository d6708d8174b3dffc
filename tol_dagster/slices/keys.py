"""Slice keys: `rank=value`, or a path of such conditions joined with `/` that must all hold.

The grammar, decided once here and relied on by partitions, file names and the catalog:

- A condition is `rank=value`: `rank` is one of `schema.SLICE_RANKS`; the value is everything
  after the FIRST `=` (so a value may itself hold `=`), matched exactly and case-sensitively.
  Values may hold any Unicode, quotes, commas, parentheses and spaces; leading and trailing
  spaces are part of the value. An empty or all-whitespace value is an error.
- A path key joins conditions with `/` (`kingdom=Animalia/genus=Morus`); all must hold. Each
  rank may appear once. The canonical name lists the conditions from the top rank down
  (`scientific_name` last), so two spellings of one slice are one partition.
- A `/` inside a value is written `%2F` (or `%2f`) and a `%` that would otherwise start one of
  these escapes is written `%25`. Only these two escapes are read; any other `%` is literal,
  so `50%` needs no escaping.
- `species=` takes the binomial (`species=Danaus plexippus`) and matches rows whose `species`
  column holds that binomial, or whose `genus` is the part before the first space and whose
  `species` is the rest (the bare epithet, as the card documents). A one-word value
  (`species=plexippus`) matches the `species` column exactly: an epithet alone names no single
  taxon, so narrow it with a path (`genus=Danaus/species=plexippus`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.errors import SliceSpecError
from tol_dagster.schema import SLICE_RANKS, quote_ident

#: Longest percent-encoded key kept whole in a file name (see `SliceKey.file_name`).
MAX_STEM_BYTES = 200

#: Escapes read inside a value (case-insensitive), and what they stand for.
_ESCAPE = re.compile(r"%(2[Ff]|25)")
#: A `%` that a reader would take for the start of an escape.
_AMBIGUOUS_PERCENT = re.compile(r"%(?=2[Ff]|25)")

#: Unicode categories refused in a key: control, format, surrogate, private use, unassigned,
#: line and paragraph separators.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

_HELP = (
    "expected rank=value, or conditions joined with '/' such as kingdom=Animalia/genus=Morus; "
    f"rank is one of {', '.join(SLICE_RANKS)}; write a '/' inside a value as %2F"
)


@dataclass(frozen=True, slots=True)  # a rank's plan holds one per value: 868,000 species
class SliceKey:
    """A parsed slice key: conditions `(rank, value)` from the top rank down, all required."""

    conditions: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        """The canonical key text (the partition key and the catalog's `name`)."""
        return "/".join(f"{rank}={_escape(value)}" for rank, value in self.conditions)

    @property
    def rank(self) -> str:
        """The rank of the last (narrowest) condition."""
        return self.conditions[-1][0]

    @property
    def value(self) -> str:
        """The value of the last (narrowest) condition."""
        return self.conditions[-1][1]

    @property
    def file_name(self) -> str:
        """The slice's file name: the canonical key percent-encoded (`unquote` gives it back).

        A key whose encoding would pass `MAX_STEM_BYTES` (file systems allow 255 bytes, and the
        temp file needs room) keeps a readable prefix plus a hash of the full key: still stable
        and unique, and the catalog maps it back to its key.
        """
        stem = quote(self.name, safe="")
        if len(stem) > MAX_STEM_BYTES:
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:16]
            prefix = stem[: MAX_STEM_BYTES - 17]
            cut = prefix.find("%", len(prefix) - 2)  # never split an escape
            stem = f"{prefix if cut == -1 else prefix[:cut]}~{digest}"
        return stem + ".parquet"

    def __str__(self) -> str:
        return self.name


def parse_slice_key(text: str) -> SliceKey:
    """Parse and validate `text`; raise `SliceSpecError` saying what is allowed."""
    if not isinstance(text, str) or not text:
        raise SliceSpecError(f"empty slice key; {_HELP}")
    _refuse_unprintable(text)
    conditions: dict[str, str] = {}
    for part in text.split("/"):
        rank, sep, raw = part.partition("=")
        if not sep:
            raise SliceSpecError(f"slice key {text!r}: {part!r} has no '='; {_HELP}")
        if rank not in SLICE_RANKS:
            raise SliceSpecError(f"slice key {text!r}: unknown rank {rank!r}; {_HELP}")
        value = _unescape(raw)
        if not value.strip():
            raise SliceSpecError(f"slice key {text!r}: empty value for {rank!r}; {_HELP}")
        if rank in conditions:
            raise SliceSpecError(f"slice key {text!r}: rank {rank!r} appears twice; {_HELP}")
        conditions[rank] = value
    ordered = tuple(sorted(conditions.items(), key=lambda item: SLICE_RANKS.index(item[0])))
    return SliceKey(ordered)


def nameable(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """Which of `values` (strings, none NULL) a key can name: upstream may hold a blank rank
    value or one with a control character, which `parse_slice_key` refuses, so a rank's plan
    leaves them out. Printable ASCII is decided by pyarrow; the rest (few) as the parser does.
    """
    plain = pc.match_substring_regex(values, r"^[ -~]*$")
    named = pc.match_substring_regex(values, r"[!-~]").to_numpy(zero_copy_only=False)
    others = pc.indices_nonzero(pc.invert(plain)).to_numpy()
    for at, value in zip(others.tolist(), values.take(others).to_pylist(), strict=True):
        named[at] = bool(value.strip()) and _unprintable(value) is None
    return pa.array(named, pa.bool_())


def _refuse_unprintable(text: str) -> None:
    """SliceSpecError naming the first non-printable character of `text` and where it is."""
    found = _unprintable(text)
    if found is not None:
        position, char, category = found
        raise SliceSpecError(
            f"slice key {text!r}: character {position} is U+{ord(char):04X} "
            f"({unicodedata.name(char, 'unnamed')}, category {category}), which no taxon "
            "name holds; remove it (control and other non-printable characters are refused)"
        )


def _unprintable(text: str) -> tuple[int, str, str] | None:
    """(position from 1, character, category) of the first non-printable character of `text`."""
    for position, char in enumerate(text, start=1):
        category = unicodedata.category(char)
        if category in UNPRINTABLE_CATEGORIES:
            return position, char, category
    return None


def split_binomial(value: str) -> tuple[str, str] | None:
    """`(genus, epithet)` of a binomial split at its first space, or None for one word."""
    genus, sep, epithet = value.partition(" ")
    return (genus, epithet) if sep and genus and epithet else None


def to_sql_filter(key: SliceKey) -> tuple[str, list[str]]:
    """A DuckDB WHERE clause for `key` with `?` placeholders, and the values to bind in order.

    Values are never spliced into SQL; column names are quoted (`order`, `class` are keywords).
    """
    clauses: list[str] = []
    params: list[str] = []
    for alternatives in _predicate(key):
        terms = []
        for pairs in alternatives:
            terms.append(" AND ".join(f"{quote_ident(column)} = ?" for column, _ in pairs))
            params.extend(value for _, value in pairs)
        clauses.append(
            terms[0] if len(terms) == 1 else "(" + " OR ".join(f"({t})" for t in terms) + ")"
        )
    return " AND ".join(clauses), params


def arrow_mask(key: SliceKey, table: pa.Table | pa.RecordBatch) -> pa.ChunkedArray | pa.Array:
    """The same predicate as `to_sql_filter`, for `pyarrow`: which rows of `table` (holding
    `filter_columns(key)`) match; NULL comparisons are false, as in SQL's WHERE. Compute kernels,
    not an expression: `Table.filter(expression)` builds a query plan per call (~1 ms)."""
    clauses = []
    for alternatives in _predicate(key):
        terms = [
            functools.reduce(
                pc.and_kleene, [pc.equal(table[column], value) for column, value in pairs]
            )
            for pairs in alternatives
        ]
        clauses.append(functools.reduce(pc.or_kleene, terms))
    return pc.fill_null(functools.reduce(pc.and_kleene, clauses), False)


def filter_columns(key: SliceKey) -> list[str]:
    """The columns the key's filter reads, in schema order of first use."""
    return list(
        dict.fromkeys(
            c for alternatives in _predicate(key) for pairs in alternatives for c, _ in pairs
        )
    )


def _predicate(key: SliceKey) -> list[list[list[tuple[str, str]]]]:
    """`key` as AND over conditions of OR over alternatives of AND over (column = value)."""
    predicate = []
    for rank, value in key.conditions:
        alternatives = [[(rank, value)]]
        parts = split_binomial(value) if rank == "species" else None
        if parts is not None:
            alternatives.append([("genus", parts[0]), (rank, parts[1])])
        predicate.append(alternatives)
    return predicate


def _escape(value: str) -> str:
    return _AMBIGUOUS_PERCENT.sub("%25", value).replace("/", "%2F")


def _unescape(raw: str) -> str:
    return _ESCAPE.sub(lambda m: "%" if m.group(1) == "25" else "/", raw)

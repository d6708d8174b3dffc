"""Slices: every slice equals the mirror's matching rows (all columns, mirror order) found by
brute force, with the mirror's exact schema; the checks catch what they name; a failing check
or an empty taxon never breaks what was published; only affected slices are rebuilt."""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror

import tol_dagster.slices.checks as checks_module
from tol_dagster.derived.taxon_index import INDEX_SCHEMA, build_taxon_index, read_taxon_index
from tol_dagster.errors import EmptySliceError, StoreError, ValidationFailed
from tol_dagster.parquet import list_encode
from tol_dagster.parquet.footer import Footer, SpliceError, read_footer
from tol_dagster.parquet.list_pages import list_pages
from tol_dagster.parquet.pages import read_rows
from tol_dagster.parquet.splice import Column, Splicer
from tol_dagster.schema import DEFAULT_CONFIG, arrow_schema, expected_schema
from tol_dagster.slices import check_batch, emb_check, locate, read, write
from tol_dagster.slices.check_batch import read_for_checks
from tol_dagster.slices.checks import (
    ROWS_MATCH_INDEX_COUNT,
    ROWS_SATISFY_KEY,
    SCHEMA_MATCHES_MIRROR,
    UUIDS_UNIQUE,
    check_rows_match_index_count,
    check_rows_satisfy_key,
    check_schema_matches,
    check_uuids_unique,
    row_check_columns,
    row_facts,
    slice_checks,
)
from tol_dagster.slices.counts import close_matches, expected_count, refuse_empty
from tol_dagster.slices.emb_check import EMB_MATCHES_MIRROR, check_emb_matches_mirror
from tol_dagster.slices.extract import SliceResult, extract_slice
from tol_dagster.slices.keys import SliceKey, parse_slice_key, split_binomial, to_sql_filter
from tol_dagster.slices.rebuilds import affected_slices
from tol_dagster.slices.slice_uuids import SliceUuids, may_repeat, read_slice_uuids
from tol_dagster.slices.write import EMB_LEAF
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation.checks import CheckResult
from tol_dagster.validation.emb_digests import digest_table, emb_matrix, save_table
from tol_dagster.validation.uuid_index import uuid_row_hashes

SCHEMA = expected_schema(DEFAULT_CONFIG)


class Mirror:
    """The sample mirror, its taxon index, and the whole mirror in memory for brute force."""

    def __init__(self, files: list[MirrorFile], index: pa.Table, layout: Layout) -> None:
        self.files = files
        self.index = index
        self.layout = layout  # where the `emb` digests the slice check reads are kept
        self.table = pa.concat_tables(pq.read_table(f.path) for f in files)
        self.rows = self.table.drop_columns(["emb"]).to_pylist()

    def checks(self, path: Path, key: SliceKey, expected: int, *, index: bool = False) -> list:
        """Every blocking check of the slice at `path` against this mirror."""
        return slice_checks(
            path, key, expected, SCHEMA, self.files, self.index if index else None,
            layout=self.layout, config=DEFAULT_CONFIG,
        )  # fmt: skip

    def emb_check(self, path: Path, key: SliceKey, *, index: bool = False) -> CheckResult:
        return check_emb_matches_mirror(
            path, key, self.files, self.index if index else None,
            layout=self.layout, config=DEFAULT_CONFIG,
        )  # fmt: skip

    def expected(self, key: SliceKey) -> pa.Table:
        """The rows satisfying `key`, judged row by row in plain Python, in mirror order."""
        keep = [i for i, row in enumerate(self.rows) if _satisfies(row, key)]
        return self.table.take(pa.array(keep, pa.int64()))

    def most_common(self, column: str, predicate: Callable[[str], bool]) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            value = row[column]
            if value is not None and predicate(value):
                counts[value] = counts.get(value, 0) + 1
        assert counts, f"the sample has no {column} value of the kind this test needs"
        return max(sorted(counts), key=lambda v: counts[v])


def _satisfies(row: dict[str, str | None], key: SliceKey) -> bool:
    for rank, value in key.conditions:
        parts = split_binomial(value) if rank == "species" else None
        exact = row[rank] == value
        split = parts is not None and (row["genus"], row["species"]) == parts
        if not (exact or split):
            return False
    return True


@pytest.fixture(scope="module")
def mirror(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    files = sample_mirror(small_sample)
    layout = Layout(tmp_path_factory.mktemp("home"))
    build_taxon_index(files, layout, DEFAULT_CONFIG)
    return Mirror(files, read_taxon_index(layout, DEFAULT_CONFIG), layout)


def _spy_read_ways(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The ways the reader reads a range of rows, filled in as it uses them: by pages through
    the offset index, by pyarrow from the row group's start, or by DuckDB."""
    used: set[str] = set()
    ways = {"_page_chunk": "pages", "_pyarrow_rows": "pyarrow", "_duckdb_rows": "duckdb"}
    for name, way in ways.items():
        real = getattr(read, name)

        def spy(*args: object, _real: Callable = real, _way: str = way) -> object:
            used.add(_way)
            return _real(*args)

        monkeypatch.setattr(read, name, spy)
    return used


def _extract(mirror: Mirror, text: str, out_dir: Path, *, index: bool = True) -> tuple:
    key = parse_slice_key(text)
    out = out_dir / key.file_name
    result = extract_slice(key, mirror.files, mirror.index if index else None, out, schema=SCHEMA)
    return key, result, pq.read_table(out)


@pytest.mark.parametrize(
    "text",
    [
        "family=Felidae",
        "order=Primates",
        "family=Nymphalidae",
        "species=Danaus plexippus",
        "kingdom=Animalia",
        "genus=Morus",
        "kingdom=Animalia/genus=Morus",
        "kingdom=Plantae/genus=Morus",
        "species=plexippus",
        "genus=Danaus/species=plexippus",
        "order=Perciformes",  # ray-finned fishes: class is NULL
        "class=Squamata",  # order is NULL
        "kingdom=Animalia/class=Squamata/family=Felidae",  # no row has all three
    ],
)
@pytest.mark.parametrize(
    ("pages", "dense_share"),
    [(True, 0.4), (False, 0.0), (False, 0.4), (False, 2.0)],
    ids=["pages", "pyarrow", "no-page-index", "duckdb"],
)
def test_a_slice_equals_the_matching_rows_of_the_mirror_in_order(
    mirror: Mirror,
    tmp_path: Path,
    text: str,
    pages: bool,
    dense_share: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(read, "PAGE_READS", pages)
    monkeypatch.setattr(read, "DENSE_SHARE", dense_share)
    used = _spy_read_ways(monkeypatch)
    key, result, table = _extract(mirror, text, tmp_path)
    expected = mirror.expected(key)
    if pages:
        allowed = {"pages"}
    else:  # every range is dense when the share is 0, none when it is above 1
        allowed = {"pyarrow"} if dense_share <= 0 else {"duckdb"} if dense_share > 1 else None
    assert used <= (allowed or {"pyarrow", "duckdb"})
    assert bool(used) == (result.row_groups_copied < result.row_groups_read)  # ranges to read
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.equals(expected)
    assert (result.rows, result.key) == (expected.num_rows, key.name)
    assert (result.bytes, result.sha256) == (result.path.stat().st_size, sha256_file(result.path))
    assert result.rows == expected_count(key, mirror.index, mirror.files)
    assert (result.rows == 0) == ("Squamata/family" in text)
    assert mirror.emb_check(result.path, key, index=True).passed
    assert mirror.emb_check(result.path, key).passed  # every file


@pytest.mark.parametrize(
    "text", ["family=Felidae", "species=Danaus plexippus", "order=Primates", "family=Nymphalidae"]
)
def test_readme_taxa_span_several_files(mirror: Mirror, tmp_path: Path, text: str) -> None:
    _, result, _ = _extract(mirror, text, tmp_path)
    assert len(result.source_files) > 1


def test_a_large_taxon_spans_row_groups_within_files(mirror: Mirror, tmp_path: Path) -> None:
    _, result, _ = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert result.row_groups_read > 2 * len(result.source_files)


def test_a_path_key_narrows_a_homonym_to_fewer_row_groups(mirror: Mirror, tmp_path: Path) -> None:
    _, both, table = _extract(mirror, "genus=Morus", tmp_path)
    _, animals, narrowed = _extract(mirror, "kingdom=Animalia/genus=Morus", tmp_path)
    assert set(table["kingdom"].to_pylist()) >= {"Animalia", "Plantae"}
    assert set(narrowed["kingdom"].to_pylist()) == {"Animalia"}
    assert 0 < animals.rows < both.rows
    assert animals.row_groups_read < both.row_groups_read


@pytest.mark.parametrize(
    ("column", "pattern"),
    [
        ("scientific_name", r"\(.*'.*,"),  # parentheses, an apostrophe, a comma
        ("scientific_name", r"[^\x00-\x7f]"),  # non-ASCII
        ("common_name", r"'"),  # keyed on another column below: the slice must still match
    ],
)
def test_awkward_names_are_matched_exactly(
    mirror: Mirror, tmp_path: Path, column: str, pattern: str
) -> None:
    name = mirror.most_common(column, lambda v: re.search(pattern, v) is not None)
    if column != "scientific_name":
        genus = next(r["genus"] for r in mirror.rows if r[column] == name and r["genus"])
        name, column = genus, "genus"
    key, result, table = _extract(mirror, f"{column}={name.replace('/', '%2F')}", tmp_path)
    assert result.rows > 0
    assert table.equals(mirror.expected(key))


def test_a_species_whose_epithet_holds_a_space_and_non_ascii(
    mirror: Mirror, tmp_path: Path
) -> None:
    epithet = mirror.most_common("species", lambda v: " " in v and not v.isascii())
    genus = next(r["genus"] for r in mirror.rows if r["species"] == epithet and r["genus"])
    key, result, table = _extract(mirror, f"species={genus} {epithet}", tmp_path)
    assert result.rows > 0
    assert table.equals(mirror.expected(key))
    assert result.rows == expected_count(key, mirror.index, mirror.files)


def test_a_species_held_as_binomial_in_some_rows_and_epithet_in_others(
    mirror: Mirror, tmp_path: Path
) -> None:
    binomial = mirror.most_common("species", lambda v: " " in v and v.isascii())
    genus, epithet = binomial.split(" ", 1)
    spellings = {r["species"] for r in mirror.rows if r["genus"] == genus}
    assert {binomial, epithet} <= spellings, "the sample should hold both spellings"
    key, _, table = _extract(mirror, f"species={binomial}", tmp_path)
    assert set(table["species"].to_pylist()) == {binomial, epithet}
    assert table.equals(mirror.expected(key))


@pytest.mark.parametrize(
    "text", ["family=Felidae", "species=plexippus", "kingdom=Plantae/genus=Morus"]
)
def test_without_an_index_the_slice_is_the_same(mirror: Mirror, tmp_path: Path, text: str) -> None:
    _, with_index, table = _extract(mirror, text, tmp_path / "a")
    _, without, again = _extract(mirror, text, tmp_path / "b", index=False)
    assert again.equals(table)
    assert without.rows == with_index.rows
    key = parse_slice_key(text)
    assert expected_count(key, None, mirror.files) == with_index.rows


def test_an_empty_taxon_gives_a_zero_row_file_with_the_full_schema_and_a_warning(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, result, table = _extract(mirror, "family=Nonexistidae", tmp_path)
    assert table.num_rows == 0 and result.rows == 0
    assert pq.read_schema(result.path).equals(SCHEMA, check_metadata=False)
    assert result.warnings and "no rows" in result.warnings[0] and key.name in result.warnings[0]
    assert expected_count(key, mirror.index, mirror.files) == 0


def test_emb_keeps_its_exact_type_and_is_written_with_the_cheap_settings(
    mirror: Mirror, tmp_path: Path
) -> None:
    _, result, _ = _extract(mirror, "family=Felidae", tmp_path)
    meta = pq.read_metadata(result.path)
    assert pq.read_schema(result.path).field("emb").type == pa.list_(pa.float16(), 768)
    columns = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
        for i in range(meta.num_columns)
    }
    emb = columns[EMB_LEAF]
    assert emb.compression == {"none": "UNCOMPRESSED", "zstd": "ZSTD"}[result.emb_compression]
    assert not emb.is_stats_set and not emb.has_dictionary_page
    assert columns["family"].is_stats_set


def test_string_columns_are_compressed_only_in_row_groups_worth_it(tmp_path: Path) -> None:
    schema = arrow_schema(dim=8)
    small, large = write.MIN_COMPRESSED_ROWS - 1, write.MIN_COMPRESSED_ROWS
    for rows in (small, large):
        table = pa.table(
            {
                "uuid": [f"u{i:06d}" for i in range(rows)],
                "emb": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.arange(8 * rows) % 7, pa.float16()), 8
                ),
                **{
                    name: pa.array([f"{name}-{i % 9}" for i in range(rows)])
                    for name in schema.names[2:]
                },
            },
            schema=schema,
        )
        sink = pa.BufferOutputStream()
        splicer = Splicer(sink, write.reference_footer(schema))
        splicer.add_columns(write.encoded_columns(table, schema, "none"), rows)
        splicer.close()
        data = sink.getvalue()
        meta = pq.read_metadata(pa.BufferReader(data))
        codecs = {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}
        assert codecs == ({"UNCOMPRESSED"} if rows == small else {"UNCOMPRESSED", "ZSTD"})
        assert meta.row_group(0).column(0).compression == (
            "ZSTD" if rows == large else "UNCOMPRESSED"
        )
        assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_compressible_embeddings_are_compressed(tmp_path: Path) -> None:
    schema = arrow_schema(dim=8)
    n = 4000
    table = pa.table(
        {
            "uuid": [f"u{i:05d}" for i in range(n)],
            "emb": pa.FixedSizeListArray.from_arrays(pa.array([0.5] * (8 * n), pa.float16()), 8),
            **{
                name: pa.array([f"F{i % 4}" if name == "family" else "x" for i in range(n)])
                for name in schema.names[2:]
            },
        },
        schema=schema,
    )
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=1000)
    files = [MirrorFile(path.name, sha256_file(path), path)]
    result = extract_slice(
        parse_slice_key("family=F1"), files, None, tmp_path / "s.parquet", schema=schema
    )
    assert (result.rows, result.emb_compression) == (n // 4, "zstd")
    assert pq.read_table(result.path).equals(table.filter(pc.equal(table["family"], "F1")))


def test_emb_codec_is_decided_by_the_batchs_own_values_only() -> None:
    """A batch sliced from a larger table shares its buffer: the bytes after the batch's rows
    (here, zeros that compress to nothing) must not decide the codec of its own (random)."""
    rng = np.random.default_rng(9)
    rows = 16  # less than the probe's bytes
    assert rows * 768 * 2 < write._PROBE_BYTES
    noise = rng.integers(0, 1 << 16, rows * 768, dtype=np.uint16).view(np.float16)
    values = np.concatenate([noise, np.zeros(4000 * 768, np.float16)])
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float16()), 768)
    table = pa.table({"emb": emb})
    assert write._emb_codec(table.slice(0, rows).to_batches()[0]) == "none"
    assert write._emb_codec(table.slice(rows, rows).to_batches()[0]) == "zstd"
    assert write._emb_codec(table.slice(0, rows)) == "none"  # a table: its first batch decides
    prefix = rng.integers(0, 1 << 16, 64 * 768, dtype=np.uint16).view(np.float16)  # > a probe
    zeros = pa.array(np.concatenate([prefix, np.zeros(64 * 768, np.float16)])).slice(64 * 768)
    lists = pa.FixedSizeListArray.from_arrays(zeros, 768)  # of a child that is sliced itself
    assert write._emb_codec(pa.table({"emb": lists})) == "zstd"
    with_null = pa.array([None, *emb.slice(0, rows).to_pylist()], emb.type)
    assert write._emb_codec(pa.table({"emb": with_null})) == "none"  # its values, not the null's


def test_the_slice_reads_only_the_row_groups_the_index_names(
    mirror: Mirror, tmp_path: Path
) -> None:
    _, result, _ = _extract(mirror, "species=Danaus plexippus", tmp_path)
    total = sum(pq.read_metadata(f.path).num_row_groups for f in mirror.files)
    named = mirror.index.filter(
        pc.and_(
            pc.equal(mirror.index["rank"], "species"),
            pc.equal(mirror.index["value"], "Danaus plexippus"),
        )
    )
    assert result.row_groups_read == named.num_rows < total


def test_an_index_naming_a_file_outside_the_mirror_is_refused(
    mirror: Mirror, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="rebuild"):
        extract_slice(
            parse_slice_key("family=Felidae"),
            mirror.files[:1],
            mirror.index,
            tmp_path / "x.parquet",
            schema=SCHEMA,
        )
    assert list(tmp_path.iterdir()) == []


# --- checks ---------------------------------------------------------------------------------


def test_the_checks_pass_on_a_good_slice(mirror: Mirror, tmp_path: Path) -> None:
    key, result, _ = _extract(mirror, "family=Felidae", tmp_path)
    expected = expected_count(key, mirror.index, mirror.files)
    checks = mirror.checks(result.path, key, expected)
    assert [c.check for c in checks] == [
        ROWS_MATCH_INDEX_COUNT,
        ROWS_SATISFY_KEY,
        UUIDS_UNIQUE,
        SCHEMA_MATCHES_MIRROR,
        EMB_MATCHES_MIRROR,
    ]
    assert all(c.passed for c in checks), [c.message for c in checks if not c.passed]


@pytest.mark.parametrize("text", ["family=Felidae", "order=Primates", "kingdom=Animalia"])
def test_the_emb_check_reads_our_slices_pages_in_place_as_pyarrow_decodes_them(
    mirror: Mirror, tmp_path: Path, text: str
) -> None:
    """Spliced pages, re-encoded boundary pages and row groups copied whole: all the plain
    case the check's page reader takes (pyarrow is its fallback, never silently its path)."""
    _, result, _ = _extract(mirror, text, tmp_path)
    written = pq.ParquetFile(result.path)
    dim = written.schema_arrow.field("emb").type.list_size
    for group in range(written.num_row_groups):
        pages = list_pages(result.path, written.metadata, "emb", dim, np.dtype(np.float16), [group])
        decoded = written.read_row_group(group, columns=["emb"])["emb"]
        assert np.concatenate(list(pages)).tobytes() == emb_matrix(decoded).tobytes()


def test_each_check_fails_on_the_fault_it_names(mirror: Mirror, tmp_path: Path) -> None:
    key, result, table = _extract(mirror, "family=Felidae", tmp_path)
    assert not check_rows_match_index_count(result.path, key, table.num_rows + 1).passed

    intruder = mirror.expected(parse_slice_key("family=Nymphalidae")).slice(0, 1)
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables([table, intruder]), mixed)
    failed = check_rows_satisfy_key(mixed, key)
    assert not failed.passed and intruder["uuid"][0].as_py() in failed.message

    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.concat_tables([table, table.slice(0, 2)]), doubled)
    failed = check_uuids_unique(doubled, key)
    assert not failed.passed and failed.details["duplicated"] == 2

    # NULL is one uuid, as GROUP BY groups it: two NULLs are a duplicate, one is not
    nulls = pa.array([None] * 2, pa.string())
    for count, passes in ((1, True), (2, False)):
        path = tmp_path / f"null-uuids-{count}.parquet"
        pq.write_table(table.slice(0, 5).set_column(0, "uuid", pa.concat_arrays(
            [nulls.slice(0, count), table["uuid"].slice(count, 5 - count).combine_chunks()]
        )), path)  # fmt: skip
        facts = row_facts(path, key)
        assert check_uuids_unique(path, key, facts).passed is passes
        assert facts.duplicated == (0 if passes else 1) and facts.violations == 0

    widened = tmp_path / "widened.parquet"
    emb = table["emb"].cast(pa.list_(pa.float32()))
    pq.write_table(table.set_column(1, "emb", emb), widened)
    failed = check_schema_matches(widened, SCHEMA, key)
    assert not failed.passed and "emb" in failed.message
    for good in (check_rows_satisfy_key(result.path, key), check_uuids_unique(result.path, key)):
        assert good.passed


def test_uniqueness_is_told_from_the_uuid_hashes_and_equal_hashes_confirmed_on_uuids(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, result, table = _extract(mirror, "family=Felidae", tmp_path)
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.concat_tables([table, table.slice(0, 2)]), doubled, row_group_size=7)
    checks = {c.check: c for c in mirror.checks(doubled, key, table.num_rows + 2)}
    assert not checks[UUIDS_UNIQUE].passed and checks[UUIDS_UNIQUE].details["duplicated"] == 2
    assert checks[ROWS_SATISFY_KEY].passed
    with pq.ParquetFile(doubled) as written:  # many row groups, hashed in one query
        groups = list(read_slice_uuids(written).groups())
        assert len(groups) == written.num_row_groups > 2
        for number, group in enumerate(groups):
            uuids = written.read_row_group(number, columns=["uuid"])["uuid"]
            assert (group.hashes == uuid_row_hashes(uuids)).all()
            assert (group.valid == uuids.is_valid().to_numpy(zero_copy_only=False)).all()

    with pq.ParquetFile(result.path) as written:
        read_twice = read_slice_uuids(written), read_slice_uuids(written)
    again = read_twice[1]
    collided = SliceUuids(np.zeros_like(again.hashes), again.valid, again.sizes)
    assert not may_repeat(read_twice[0])
    assert np.all(read_twice[0].hashes[1:] >= read_twice[0].hashes[:-1]), "sorted in place"
    assert may_repeat(collided)  # every uuid shares a hash: the uuids are compared instead
    facts = row_facts(result.path, key, uuids_may_repeat=True)
    assert facts.duplicated == 0 and check_uuids_unique(result.path, key, facts).passed

    for nulls, repeats in ((1, False), (2, True)):  # NULL is one uuid, as GROUP BY groups it
        uuids = pa.array([None] * nulls + [f"u{i}" for i in range(5)], pa.string())
        assert may_repeat(SliceUuids.of(uuids)) is repeats


class _RowShort:
    """A DuckDB connection whose streamed Arrow results lack their last row: a reader fault."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def sql(self, query: str, **options: object) -> _RowShort:
        self.relation = self.con.sql(query, **options)  # type: ignore[arg-type]
        return self

    def to_arrow_reader(self, batch_size: int) -> pa.RecordBatchReader:
        table = self.relation.to_arrow_table()
        return table.slice(0, table.num_rows - 1).to_reader(batch_size)

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def test_one_query_reads_the_uuids_and_counts_the_rows_off_the_key(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks take each row group's uuid hashes, NULL uuids and the rows off the key from one
    DuckDB query: the hashes of the uuids pyarrow reads, the same verdicts. A read that returns
    another number of rows than the footer holds is not trusted: pyarrow reads the uuids."""
    key, result, table = _extract(mirror, "family=Felidae", tmp_path)
    intruder = mirror.expected(parse_slice_key("family=Nymphalidae")).slice(0, 1)
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables([table, intruder]), mixed, row_group_size=7)

    def read_both(path: Path) -> tuple[SliceUuids, int | None, SliceUuids]:
        with pq.ParquetFile(path) as written:
            uuids, violations = checks_module._uuids_and_violations(path, key, written)
            return uuids, violations, read_slice_uuids(written)

    def same(uuids: SliceUuids, expected: SliceUuids) -> bool:
        return (
            uuids.sizes == expected.sizes
            and (uuids.hashes == expected.hashes).all()
            and (uuids.valid == expected.valid).all()
        )

    for path, off_key in ((result.path, 0), (mixed, 1)):
        uuids, violations, expected = read_both(path)
        assert violations == off_key and same(uuids, expected)
    assert len(read_both(mixed)[0].sizes) == pq.read_metadata(mixed).num_row_groups > 2
    verdicts = {c.check: c for c in mirror.checks(mixed, key, table.num_rows + 1)}
    assert not verdicts[ROWS_SATISFY_KEY].passed
    assert intruder["uuid"][0].as_py() in verdicts[ROWS_SATISFY_KEY].message

    real = checks_module.duck.cursor
    monkeypatch.setattr(
        checks_module.duck, "cursor", lambda: contextlib.nullcontext(_RowShort(real()))
    )
    uuids, violations, expected = read_both(mixed)
    assert violations is None and same(uuids, expected)
    verdicts = {c.check: c for c in mirror.checks(mixed, key, table.num_rows + 1)}
    assert not verdicts[ROWS_SATISFY_KEY].passed and verdicts[UUIDS_UNIQUE].passed


def test_a_null_uuid_is_no_mirror_row_and_two_are_one_uuid_twice(
    mirror: Mirror, tmp_path: Path
) -> None:
    """The checks keep whether each uuid is NULL, not the uuid: a row whose uuid became NULL
    is named as no mirror row's by `emb_matches_mirror`; two such rows are one uuid twice."""
    key, _, table = _extract(mirror, "family=Felidae", tmp_path)
    for nulls in (1, 2):
        uuids = table["uuid"].to_pylist()
        uuids[3 : 3 + nulls] = [None] * nulls
        path = tmp_path / f"nulls-{nulls}.parquet"
        pq.write_table(table.set_column(0, "uuid", pa.array(uuids, pa.string())), path)
        checks = {c.check: c for c in mirror.checks(path, key, table.num_rows)}
        emb = checks[EMB_MATCHES_MIRROR]
        assert not emb.passed and emb.details["faults"] == {"missing": nulls}
        assert "row 3 is uuid None, which no mirror file" in emb.message
        assert checks[UUIDS_UNIQUE].passed is (nulls == 1)
        assert checks[ROWS_SATISFY_KEY].passed


def test_a_slice_whose_uuids_are_not_strings_gets_a_verdict_not_an_error(
    mirror: Mirror, tmp_path: Path
) -> None:
    """The `emb` check reads a slice's uuids by pyarrow, whatever their type: a slice that
    stores them as bytes is found wrong (and its schema named), not a crash of the check."""
    key, _, table = _extract(mirror, "family=Felidae", tmp_path)
    path = tmp_path / "binary-uuids.parquet"
    pq.write_table(table.set_column(0, "uuid", table["uuid"].cast(pa.binary())), path)
    emb = mirror.emb_check(path, key)
    assert emb.check == EMB_MATCHES_MIRROR and emb.details["rows_compared"] == table.num_rows
    checks = {c.check: c for c in mirror.checks(path, key, table.num_rows)}
    assert (
        not checks[SCHEMA_MATCHES_MIRROR].passed and "uuid" in checks[SCHEMA_MATCHES_MIRROR].message
    )


def test_one_query_over_many_slices_reads_each_as_its_own_query_would(
    mirror: Mirror, tmp_path: Path
) -> None:
    """A rank pass reads the checks' rows of a group of slices with one DuckDB query: each
    file's rows, judged by its own key, are those of a query over that file alone, and its
    checks give the same verdicts. A group DuckDB refuses (a file that is not parquet) or one
    naming a file twice gives no rows at all: each slice then reads its own."""
    texts = [
        "family=Felidae",
        "species=Danaus plexippus",
        "kingdom=Plantae/genus=Morus",
        "kingdom=Animalia/class=Squamata/family=Felidae",  # no rows
    ]
    built = [_extract(mirror, text, tmp_path) for text in texts]
    felidae, _, table = built[0]
    intruder = mirror.expected(parse_slice_key("family=Nymphalidae")).slice(0, 1)
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables([table, intruder]), mixed, row_group_size=7)
    group = [(result.path, key) for key, result, _ in built] + [(mixed, felidae)]

    def alone(path: Path, key: SliceKey) -> pa.Table:
        where, params = to_sql_filter(key)
        with duckdb.connect() as con:
            return con.sql(
                f"SELECT {row_check_columns(where)} FROM read_parquet(?)",
                params=[*params, str(path)],
            ).to_arrow_table()

    reads = read_for_checks(group)
    assert [r.num_rows if r is not None else None for r in reads] == [
        pq.read_metadata(path).num_rows for path, _ in group
    ]
    for (path, key), rows in zip(group, reads, strict=True):
        assert rows is not None and rows.to_pylist() == alone(path, key).to_pylist(), path.name
    mixed_rows, no_rows = reads[-1], reads[3]
    assert mixed_rows is not None and pc.sum(mixed_rows["bad"]).as_py() == 1, "the intruder"
    assert no_rows is not None and no_rows.num_rows == 0
    expected = {path: pq.read_metadata(path).num_rows for path, _ in group}
    for (path, key), rows in zip(group, reads, strict=True):
        with_read = mirror.checks(path, key, expected[path])
        assert [(c.check, c.passed, c.message) for c in with_read] == [
            (c.check, c.passed, c.message)
            for c in slice_checks(
                path,
                key,
                expected[path],
                SCHEMA,
                mirror.files,
                None,
                layout=mirror.layout,
                config=DEFAULT_CONFIG,
                read=rows,
            )
        ]
    not_parquet = tmp_path / "not.parquet"
    not_parquet.write_text("not parquet")
    assert read_for_checks([*group, (not_parquet, felidae)]) == [None] * (len(group) + 1)
    twice = [*group, (mixed, parse_slice_key("family=Nymphalidae"))]
    assert read_for_checks(twice) == [None] * len(twice), "one file under two keys: not shared"


def test_rows_read_for_many_slices_are_split_only_when_each_file_comes_as_one_run() -> None:
    def split(files: list[int]) -> list[list[int] | None]:
        read = pa.table({"file_index": pa.array(files, pa.uint64()), "row": range(len(files))})
        return [None if t is None else t["row"].to_pylist() for t in check_batch._by_file(read, 3)]

    assert split([0, 0, 2]) == [[0, 1], [], [2]]
    assert split([]) == [[], [], []]
    assert split([0, 2, 0]) == [None] * 3, "a file's rows in two runs"
    assert split([0, 3]) == [None] * 3, "a file not asked for"
    assert check_batch.read_for_checks([]) == []


def test_a_failing_verify_leaves_the_published_slice_untouched(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, first, _ = _extract(mirror, "family=Felidae", tmp_path)
    before = first.path.read_bytes()

    def wrong_count(path: Path) -> list:
        return mirror.checks(path, key, first.rows + 5)

    with pytest.raises(ValidationFailed, match="mirror counts"):
        extract_slice(
            key, mirror.files, mirror.index, first.path, schema=SCHEMA, verify=wrong_count
        )
    assert first.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]

    passed = extract_slice(
        key, mirror.files, mirror.index, first.path, schema=SCHEMA,
        verify=lambda path: mirror.checks(path, key, first.rows),
    )  # fmt: skip
    assert len(passed.checks) == 5 and all(c.passed for c in passed.checks)


# --- emb read back independently --------------------------------------------------------------


def _flip_first_emb(rows: pa.Table) -> pa.Table:
    """`rows` with the first value of the first row's `emb` changed (1.0 added)."""
    emb = rows["emb"].combine_chunks().cast(SCHEMA.field("emb").type)
    width = emb.type.list_size
    values = np.asarray(emb.values.slice(emb.offset * width, len(emb) * width)).copy()
    values[0] += np.float16(1.0)
    flipped = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
    return rows.set_column(rows.schema.get_field_index("emb"), "emb", flipped)


def _guarded(mirror: Mirror, key: SliceKey, out: Path) -> SliceResult:
    expected = expected_count(key, mirror.index, mirror.files)
    return extract_slice(
        key, mirror.files, mirror.index, out, schema=SCHEMA,
        verify=lambda path: mirror.checks(path, key, expected, index=True),
    )  # fmt: skip


def test_a_wrong_emb_from_the_page_reader_fails_the_check_and_nothing_is_published(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key("family=Felidae")
    good = _guarded(mirror, key, tmp_path / key.file_name)
    assert good.row_groups_copied == 0  # every row went through the page reader
    before = good.path.read_bytes()
    calls: list[int] = []

    def corrupt(
        footer: object, group: int, start: int, stop: int, columns: list[str] | None = None
    ) -> pa.Table:
        rows = read_rows(footer, group, start, stop, columns)  # type: ignore[arg-type]
        if "emb" not in rows.column_names:  # the key's columns, read first
            return rows
        calls.append(group)
        return _flip_first_emb(rows) if len(calls) == 1 else rows

    monkeypatch.setattr(read, "read_rows", corrupt)
    with pytest.raises(ValidationFailed, match="differs from the mirror's") as raised:
        _guarded(mirror, key, good.path)
    assert calls
    message = str(raised.value)
    wrong_uuid = re.search(r"emb of uuid (\S+) \(row (\d+)\)", message)
    assert wrong_uuid is not None, message
    published = pq.read_table(good.path)
    assert published["uuid"][int(wrong_uuid.group(2))].as_py() == wrong_uuid.group(1)
    assert "1 of" in message
    assert good.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good.path.name]


def test_a_wrong_emb_from_the_page_encoder_fails_the_check_and_nothing_is_published(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key("family=Felidae")
    good = _guarded(mirror, key, tmp_path / key.file_name)
    before = good.path.read_bytes()
    real, pages = list_encode._page, []

    def flipped(rows: np.ndarray, *args: object) -> object:
        pages.append(len(rows))
        if len(pages) == 1:  # one bit of the first value of the first page `list_encode` writes
            rows = rows.copy()
            rows.view(np.uint16)[0, 0] ^= 1
        return real(rows, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(list_encode, "_page", flipped)
    with pytest.raises(ValidationFailed, match=r"emb of uuid \S+ \(row 0\) differs"):
        _guarded(mirror, key, good.path)
    assert pages
    assert good.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good.path.name]


def test_a_wrong_emb_from_the_splicer_fails_the_check_and_nothing_is_published(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key("kingdom=Animalia")
    good = _guarded(mirror, key, tmp_path / "out" / key.file_name)
    assert good.row_groups_copied > 0
    before = good.path.read_bytes()
    # Twins of the mirror files: same layout and rows, one `emb` value changed in row group 2.
    twins = {}
    for file in mirror.files:
        table = pq.read_table(file.path)
        changed = pa.concat_tables(
            [
                table.slice(0, 1000),
                _flip_first_emb(table.slice(1000)),
            ]
        )
        twin = tmp_path / "twins" / file.name
        twin.parent.mkdir(exist_ok=True)
        pq.write_table(changed, twin, row_group_size=500, compression="zstd")
        twins[file.path] = read_footer(twin)

    class WrongSplicer(write.Splicer):
        def add(self, footer: Footer, row_group: int) -> None:
            super().add(twins.get(footer.path, footer), row_group)

    monkeypatch.setattr(write, "Splicer", WrongSplicer)
    with pytest.raises(ValidationFailed, match=r"emb of uuid \S+ \(row [\d,]+\) differs"):
        _guarded(mirror, key, good.path)
    assert good.path.read_bytes() == before
    assert [p.name for p in good.path.parent.iterdir()] == [good.path.name]


def test_hash_ranges_in_a_digest_table_are_numpys_left_and_right_ends(tmp_path: Path) -> None:
    """The `emb` check finds each uuid hash's entries by one search and a look at the next
    key: the same ends as two searches, with keys held once, twice or many times, needles
    absent, below the first key and past the last, in memory and memory-mapped."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        spread = int(rng.integers(1, 1 << 20)) if trial % 3 else 8  # few values: many repeats
        keys = np.sort(rng.integers(1, spread + 1, int(rng.integers(0, 400)), dtype=np.uint64))
        needles = rng.integers(0, spread + 2, int(rng.integers(0, 200)), dtype=np.uint64)
        if keys.size:  # and keys held
            needles = np.concatenate([needles, keys[rng.integers(0, keys.size, 20)]])
        if trial % 10 == 0:
            np.save(tmp_path / "keys.npy", keys)
            keys = np.load(tmp_path / "keys.npy", mmap_mode="r")
        needles.sort()
        low, high = emb_check._sorted_ranges(keys, needles)
        assert (low == np.searchsorted(keys, needles, side="left")).all()
        assert (high == np.searchsorted(keys, needles, side="right")).all()


def test_the_emb_check_compares_nulls_nans_and_order_and_finds_rows_not_in_the_mirror(
    tmp_path: Path,
) -> None:
    rows = 40
    values = np.arange(rows * 4, dtype=np.float16)
    values[5] = np.nan
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(values), 4, mask=pa.array([i == 7 for i in range(rows)])
    )
    table = pa.table(
        {"uuid": [f"u{i:02d}" for i in range(rows)], "emb": emb, "family": ["F"] * rows}
    )
    source = tmp_path / "mirror.parquet"
    pq.write_table(table, source, row_group_size=16)
    files = [MirrorFile("mirror.parquet", sha256_file(source), source)]
    key = parse_slice_key("family=F")
    layout = Layout(tmp_path / "home")

    def verdict(slice_table: pa.Table) -> CheckResult:
        path = tmp_path / "slice.parquet"
        pq.write_table(slice_table, path, row_group_size=7)
        return check_emb_matches_mirror(path, key, files, layout=layout, config=DEFAULT_CONFIG)

    assert verdict(table).passed  # a NaN equals itself bit for bit, a NULL row a NULL row
    assert verdict(table.slice(3, 20)).passed  # any run of the mirror's rows, in order
    zeros = np.zeros(4, dtype=np.float16)
    unnulled = table.set_column(
        1, "emb", pa.FixedSizeListArray.from_arrays(pa.array(np.where(
            np.repeat(np.arange(rows) == 7, 4), np.tile(zeros, rows), values)), 4)
    )  # fmt: skip
    failed = verdict(unnulled)  # NULL became a vector of zeros
    assert not failed.passed and "emb of uuid u07 (row 7) differs" in failed.message
    swapped = table.take(pa.array([*range(10), 11, 10, *range(12, rows)]))
    failed = verdict(swapped)
    assert not failed.passed and "row 11 (uuid u10) is out of the mirror's order" in failed.message
    assert failed.details["rows_differing"] == 1
    stranger = table.set_column(0, "uuid", pa.array([*table["uuid"].to_pylist()[:-1], "u99"]))
    failed = verdict(stranger)
    assert not failed.passed and "row 39 is uuid u99, which no mirror file" in failed.message
    one_bit = np.arange(rows * 4, dtype=np.float16)
    one_bit[5] = np.nan
    one_bit.view(np.uint16)[23 * 4 + 2] ^= 1  # the last mantissa bit of one value of row 23
    flipped = table.set_column(
        1,
        "emb",
        pa.FixedSizeListArray.from_arrays(
            pa.array(one_bit), 4, mask=table["emb"].combine_chunks().is_null()
        ),
    )
    failed = verdict(flipped)
    assert not failed.passed and "emb of uuid u23 (row 23) differs" in failed.message


def test_the_emb_check_looks_a_row_group_up_from_the_file_of_the_rows_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice is in mirror order: each row group's hashes are searched for from the file the
    rows before were found in, so a slice over F files costs about one search a row group,
    not F/2 (the real `kingdom=Animalia`: 2,240 row groups over ~330 files). A row out of
    order is still found, in a file before, and named."""
    files, tables = [], []
    for number in range(12):
        rows = [f"u{number:02d}-{row}" for row in range(10)]
        emb = pa.FixedSizeListArray.from_arrays(
            pa.array(np.arange(40, dtype=np.float16) + number), 4
        )
        table = pa.table({"uuid": rows, "emb": emb, "family": ["F"] * 10})
        path = tmp_path / f"train-{number:05d}.parquet"
        pq.write_table(table, path)
        files.append(MirrorFile(path.name, sha256_file(path), path))
        tables.append(table)
    whole = pa.concat_tables(tables)
    key, layout = parse_slice_key("family=F"), Layout(tmp_path / "home")
    searched: list[int] = []
    real = emb_check._sorted_ranges

    def counted(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        searched.append(wanted.size)
        return real(keys, wanted)

    monkeypatch.setattr(emb_check, "_sorted_ranges", counted)

    def verdict(table: pa.Table) -> CheckResult:
        path = tmp_path / "slice.parquet"
        pq.write_table(table, path, row_group_size=7)
        searched.clear()
        return check_emb_matches_mirror(path, key, files, layout=layout, config=DEFAULT_CONFIG)

    assert verdict(whole).passed
    groups = pq.read_metadata(tmp_path / "slice.parquet").num_row_groups
    assert len(searched) <= 2 * groups, f"{len(searched)} searches for {groups} row groups"
    late = whole.take(pa.array([*range(1, whole.num_rows), 0]))  # file 0's first row, last
    failed = verdict(late)
    assert not failed.passed and failed.details["rows_differing"] == 1
    assert f"row {whole.num_rows - 1} (uuid u00-0) is out of the mirror's order" in failed.message


def test_a_slice_missing_rows_of_the_mirror_is_refused_by_its_row_count(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, result, table = _extract(mirror, "family=Felidae", tmp_path)
    short = tmp_path / "short.parquet"
    pq.write_table(table.slice(0, table.num_rows - 1), short)
    verdicts = {c.check: c for c in mirror.checks(short, key, result.rows)}
    assert verdicts[EMB_MATCHES_MIRROR].passed  # what is there is the mirror's
    assert not verdicts[ROWS_MATCH_INDEX_COUNT].passed


# --- keys matching no row ------------------------------------------------------------------


def test_a_key_matching_no_row_is_refused_with_close_matches_from_the_index(
    mirror: Mirror,
) -> None:
    family = mirror.most_common("family", lambda v: len(v) > 6)
    typo = family[:-2] + family[-1] + family[-2]  # two letters swapped
    key = parse_slice_key(f"family={typo}")
    assert expected_count(key, mirror.index, mirror.files) == 0
    with pytest.raises(EmptySliceError) as raised:
        refuse_empty(key, mirror.index, 0)
    assert raised.value.exit_code == 2
    assert raised.value.matches[0] == f"family={family}" and len(raised.value.matches) <= 5
    assert f"family={family}" in str(raised.value) and "--allow-empty" in str(raised.value)

    refuse_empty(parse_slice_key(f"family={family}"), mirror.index, 3)  # rows: nothing to say
    nothing = parse_slice_key("family=Qqqqqqqqqqqqqqq")
    with pytest.raises(EmptySliceError, match="no close match"):
        refuse_empty(nothing, mirror.index, 0)


def test_a_path_key_whose_conditions_exist_apart_says_no_row_has_them_all(
    mirror: Mirror,
) -> None:
    key = parse_slice_key("kingdom=Animalia/class=Squamata/family=Felidae")
    assert expected_count(key, mirror.index, mirror.files) == 0
    with pytest.raises(EmptySliceError, match="no row satisfies all of them") as raised:
        refuse_empty(key, mirror.index, 0)
    assert raised.value.matches == ()


def test_close_matches_skip_lengths_that_cannot_reach_the_cutoff(mirror: Mirror) -> None:
    values = set(mirror.index.filter(pc.equal(mirror.index["rank"], "genus"))["value"].to_pylist())
    for probe in ["Pantera", "Moru", "Danauss", "x"]:
        brute = difflib.get_close_matches(probe, sorted(values), n=5)
        assert close_matches(mirror.index, "genus", probe) == brute, probe


# --- affected slices --------------------------------------------------------------------------


def _index(*entries: tuple[str, str, str, int, int, int]) -> pa.Table:
    rows = [
        {
            "rank": r,
            "value": v,
            "file": f,
            "row_group": g,
            "row_start": s,
            "row_end": e,
            "rows": e - s,
        }
        for r, v, f, g, s, e in entries
    ]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


_ENTRIES = [
    ("family", "Felidae", "f0", 0, 0, 10),
    ("family", "Canidae", "f1", 0, 0, 10),
    ("family", "Hominidae", "f2", 0, 0, 10),
    ("kingdom", "Animalia", "f0", 0, 0, 10),
    ("kingdom", "Animalia", "f1", 0, 0, 10),
    ("kingdom", "Plantae", "f2", 1, 10, 20),
    ("genus", "Morus", "f0", 0, 5, 6),
    ("genus", "Morus", "f2", 1, 12, 13),
]
OLD = _index(*_ENTRIES)
# After the resync, Hominidae's rows moved from f2 to f3; nothing else changed.
NEW = _index(*[(r, v, "f3" if v == "Hominidae" else f, g, s, e) for r, v, f, g, s, e in _ENTRIES])


@pytest.mark.parametrize(
    ("changed", "affected"),
    [
        (set(), []),
        ({"f1"}, ["family=Canidae", "kingdom=Animalia"]),
        ({"f0"}, ["family=Felidae", "kingdom=Animalia", "kingdom=Animalia/genus=Morus"]),
        ({"f2"}, ["family=Hominidae", "kingdom=Plantae/genus=Morus"]),  # Hominidae left f2
        ({"f3"}, ["family=Hominidae"]),  # ...and arrived in f3
        ({"f9"}, []),
    ],
)
def test_only_slices_whose_taxa_touch_a_changed_file_are_affected(
    changed: set[str], affected: list[str]
) -> None:
    keys = [
        "family=Felidae",
        "family=Canidae",
        "family=Hominidae",
        "kingdom=Animalia",
        "genus=Morus/kingdom=Animalia",
        "kingdom=Plantae/genus=Morus",
    ]
    assert affected_slices(keys, OLD, NEW, changed) == affected


def test_slices_never_built_are_always_affected() -> None:
    keys = ["family=Felidae", "family=Canidae"]
    assert affected_slices(keys, None, NEW, set()) == keys
    assert affected_slices(keys, OLD, NEW, set(), built=["family=Felidae"]) == ["family=Canidae"]
    assert affected_slices(keys, OLD, NEW, {"f0"}, built=keys) == ["family=Felidae"]


def test_a_key_the_index_cannot_locate_is_affected_by_any_change() -> None:
    assert affected_slices(["species=plexippus"], OLD, NEW, {"f9"}) == ["species=plexippus"]
    assert affected_slices(["species=plexippus"], OLD, NEW, set()) == []


def test_a_read_failure_mid_slice_leaves_no_file_and_the_old_slice_intact(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, first, _ = _extract(mirror, "kingdom=Animalia", tmp_path / "out")
    before = first.path.read_bytes()
    broken = tmp_path / mirror.files[1].name
    data = mirror.files[1].path.read_bytes()
    broken.write_bytes(data[: len(data) // 3] + bytes(len(data) // 3) + data[2 * len(data) // 3 :])
    files = [
        MirrorFile(f.name, f.sha256, broken if f is mirror.files[1] else f.path)
        for f in mirror.files
    ]
    with pytest.raises((OSError, pa.ArrowException, duckdb.Error, StoreError)):
        extract_slice(key, files, mirror.index, first.path, schema=SCHEMA)
    assert first.path.read_bytes() == before
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]


# --- whole row groups copied as bytes ------------------------------------------------------------


def test_row_groups_full_of_the_taxon_are_copied_and_the_file_reads_everywhere(
    mirror: Mirror, tmp_path: Path
) -> None:
    key, result, table = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert 0 < result.row_groups_copied < result.row_groups_read
    assert table.equals(mirror.expected(key))
    meta = pq.read_metadata(result.path)
    assert (
        meta.num_rows
        == result.rows
        == sum(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
    )
    counted = duckdb.sql(f"SELECT count(*), count(DISTINCT uuid) FROM '{result.path}'")
    assert counted is not None and counted.fetchall() == [(result.rows, result.rows)]
    assert all(c.passed for c in mirror.checks(result.path, key, result.rows))
    assert all(meta.row_group(g).column(1).has_offset_index for g in range(meta.num_row_groups))
    family = table["family"][table.num_rows // 2].as_py()
    found = duckdb.sql(f"SELECT uuid FROM '{result.path}' WHERE family = $f", params={"f": family})
    wanted = table.filter(pc.equal(table["family"], family))["uuid"].to_pylist()
    assert found is not None and [row[0] for row in found.fetchall()] == wanted


def test_a_path_key_copies_only_what_every_condition_fills(mirror: Mirror, tmp_path: Path) -> None:
    key, result, table = _extract(mirror, "kingdom=Animalia/species=plexippus", tmp_path)
    assert result.row_groups_copied == 0  # a one-word species is not counted by the index
    assert table.equals(mirror.expected(key))


def test_files_with_another_parquet_layout_are_read_instead_of_copied(
    mirror: Mirror, tmp_path: Path
) -> None:
    other = []
    for file in mirror.files:  # same Arrow schema, but parquet field ids: another footer schema
        table = pq.read_table(file.path)
        fields = [f.with_metadata({"PARQUET:field_id": str(i)}) for i, f in enumerate(table.schema)]
        path = tmp_path / "ids" / file.name
        path.parent.mkdir(exist_ok=True)
        pq.write_table(table.cast(pa.schema(fields)), path, row_group_size=500)
        other.append(MirrorFile(file.name, sha256_file(path), path))
    key = parse_slice_key("kingdom=Animalia")
    result = extract_slice(key, other, mirror.index, tmp_path / "out.parquet", schema=SCHEMA)
    assert result.row_groups_copied == 0
    assert pq.read_table(result.path).equals(mirror.expected(key))


def test_encoded_rows_are_added_row_group_by_row_group_between_the_copied_ones(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(read, "BATCH_ROWS", 100)
    added: list[tuple[str, int]] = []  # ("copy", row group) or ("rows", rows) per add

    class Recording(write.Splicer):
        def add(self, footer: Footer, row_group: int, *, owned: bool = False) -> None:
            added.append(("copy", row_group))
            super().add(footer, row_group, owned=owned)

        def add_columns(self, columns: Sequence[Column], rows: int) -> None:
            added.append(("rows", rows))
            super().add_columns(columns, rows)

    monkeypatch.setattr(write, "Splicer", Recording)
    key, result, table = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert result.row_groups_copied > 0
    assert table.equals(mirror.expected(key))
    meta = pq.read_metadata(result.path)
    assert meta.num_row_groups > result.row_groups_copied
    assert len(added) == meta.num_row_groups  # none empty: each add is a row group out
    encoded = [rows for kind, rows in added if kind == "rows"]
    assert encoded == [
        meta.row_group(g).num_rows for g, (kind, _) in enumerate(added) if kind == "rows"
    ]
    assert len(encoded) == meta.num_row_groups - result.row_groups_copied
    assert max(encoded) < 2 * 100  # row groups of 100 rows and more, from batches of 100


def test_copied_row_groups_fall_back_to_plain_reads_where_the_kernel_cannot_copy(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []

    def refuse(*args: object) -> int:
        calls.append(args)
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    key, result, table = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert result.row_groups_copied > 0 and calls
    assert table.equals(mirror.expected(key))
    assert result.sha256 == sha256_file(result.path)


def test_copied_row_groups_are_copied_through_userspace_where_copy_file_range_is_missing(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "copy_file_range", raising=False)  # macOS, Windows
    assert not hasattr(os, "copy_file_range")
    key, result, table = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert result.row_groups_copied > 0
    assert table.equals(mirror.expected(key))
    assert result.sha256 == sha256_file(result.path)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EXDEV])
def test_copy_file_range_refusing_this_pair_of_files_falls_back(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls: list[object] = []

    def refuse(*args: object) -> int:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    key, result, table = _extract(mirror, "kingdom=Animalia", tmp_path)
    assert result.row_groups_copied > 0 and table.equals(mirror.expected(key)) and calls


def test_a_full_disk_during_a_kernel_copy_is_raised_not_hidden(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full, raising=False)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        _extract(mirror, "kingdom=Animalia", out)
    assert list(out.iterdir()) == []


def test_a_page_read_anomaly_falls_back_to_decoding_the_row_range(
    mirror: Mirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lying(footer: Footer, group: int, start: int, stop: int, **_: object) -> pa.Table:
        raise SpliceError(f"{footer.path}: pages 0..0 of a column decode to 9 rows where ...")

    monkeypatch.setattr(read, "read_rows", lying)
    key, result, table = _extract(mirror, "family=Felidae", tmp_path)
    assert table.equals(mirror.expected(key)) and result.rows > 0
    assert "reading rows" in caplog.text and "with pyarrow" in caplog.text


def test_rows_neither_the_pages_nor_pyarrow_can_read_say_the_mirror_file_is_damaged(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lying(footer: Footer, group: int, start: int, stop: int, **_: object) -> pa.Table:
        raise SpliceError("a lying offset index")

    def broken(path: Path, group: int, start: int, stop: int) -> pa.Table:
        raise pa.ArrowInvalid("Couldn't deserialize thrift")

    monkeypatch.setattr(read, "read_rows", lying)
    monkeypatch.setattr(read, "decode_rows", broken)
    with pytest.raises(StoreError, match=r"a lying offset index.*Couldn't deserialize.*damaged"):
        _extract(mirror, "family=Felidae", tmp_path)


def test_row_groups_copied_whole_are_proven_by_the_gates_crcs_without_decoding(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, result, _ = _extract(mirror, "kingdom=Animalia", tmp_path)
    groups = pq.read_metadata(result.path).num_row_groups
    assert 0 < result.row_groups_copied < groups
    decoded: list[int] = []
    real = emb_check._digests

    def counting(path: Path, written: pq.ParquetFile, group: int) -> np.ndarray | None:
        decoded.append(group)
        return real(path, written, group)

    monkeypatch.setattr(emb_check, "_digests", counting)
    assert mirror.emb_check(result.path, key, index=True).passed
    assert len(decoded) == groups - result.row_groups_copied


def test_row_groups_are_read_once_per_file_version(tmp_path: Path) -> None:
    """`locate.row_groups` is cached by the file's inode, size and mtime: asked again it does
    not parse the footer, and a file rewritten in place is read again."""
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), path, row_group_size=4)
    starts, sizes = locate.row_groups(path)
    assert starts.tolist() == [0, 4, 8] and sizes.tolist() == [4, 4, 2]
    assert locate.row_groups(path)[0] is starts, "cached"
    with pytest.raises(ValueError):
        starts[0] = 1  # shared: read-only
    pq.write_table(pa.table({"x": list(range(7))}), path, row_group_size=5)
    assert locate.row_groups(path)[1].tolist() == [5, 2]


def test_a_slice_row_is_found_among_mirror_entries_sharing_its_uuid_hash(tmp_path: Path) -> None:
    """64-bit uuid hashes collide at this scale: the digest decides which entry a row is."""

    def table(name: str, hashes: list[int], digests: list[int]) -> Path:
        path = tmp_path / f"{name}.npy"
        hashed = np.array(hashes, dtype=np.uint64)
        valid = np.ones(len(hashes), dtype=bool)
        save_table(path, digest_table(hashed, valid, np.array(digests, dtype=np.uint64)))
        return path

    first = table("first", [5, 7, 7, 9], [50, 70, 71, 90])  # rows 1 and 2 share hash 7
    second = table("second", [11], [110])
    files = [MirrorFile(p.name, "0" * 64, p) for p in (first, second)]
    mirror = emb_check._Mirror(files, [first, second], [])
    hashes = np.array([7, 11, 13, 9], dtype=np.uint64)
    placed = mirror.place(hashes)
    assert placed.owner.tolist() == [0, 1, -1, 0]
    same = mirror.same_digests(placed, np.array([71, 110, 0, 99], dtype=np.uint64))
    assert same.tolist() == [True, True, False, False]
    assert placed.row[[0, 1, 3]].tolist() == [2, 0, 3]  # hash 7's second entry, by its digest

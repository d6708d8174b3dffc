"""The validation gate's per-file and cross-file checks: each corruption is caught and named."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.parquet.footer import page_header
from tol_dagster.schema import DEFAULT_CONFIG, SORT_KEY, arrow_schema, expected_schema
from tol_dagster.store.hashing import sha256_file
from tol_dagster.validation.checks import (
    EMB_FINITE,
    EMB_NORMS_WITHIN_BOUNDS,
    FOOTER_READS,
    METADATA_EXPECTATIONS,
    ROWS_MATCH_FOOTER,
    SCHEMA_MATCHES_CONTRACT,
    SCHEMA_MATCHES_LAST_VALIDATED,
    SHA256_MATCHES_UPSTREAM,
    SORTED_BY_CONTRACT_KEY,
    UUID_UNIQUE,
    CheckResult,
)
from tol_dagster.validation.file_facts import PER_FILE_CHECKS, FileFacts, inspect_file
from tol_dagster.validation.row_counts import check_row_loss, check_rows_match_card
from tol_dagster.validation.sort_order import check_sorted_across

SCHEMA = expected_schema(DEFAULT_CONFIG)


def sample_files(small_sample: Path) -> list[Path]:
    return sorted((small_sample / DEFAULT_CONFIG).glob("*.parquet"))


def inspect(path: Path, **kwargs: object) -> FileFacts:
    options: dict[str, object] = {
        "expected_sha256": sha256_file(path),
        "actual_sha256": None,
        "expected_schema": SCHEMA,
    }
    options.update(kwargs)
    return inspect_file(path, **options)  # type: ignore[arg-type]


def rewrite(src: Path, dst: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    """Write `change(table of src)` to `dst` as the sample writes files (small row groups)."""
    table = change(pq.read_table(src))
    pq.write_table(table, dst, row_group_size=500, compression="zstd")
    return dst


def with_values(table: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    """`table` with `column` set to the given values at the given rows."""
    values = table.column(column).to_pylist()
    for row, value in rows.items():
        values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(
        index, table.schema.field(column), pa.array(values, table.schema.field(column).type)
    )


def with_emb_values(table: pa.Table, cells: dict[tuple[int, int], float]) -> pa.Table:
    emb = table.column("emb").combine_chunks()
    dim = emb.type.list_size
    values = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim).copy()
    for (row, element), value in cells.items():
        values[row, element] = value
    array = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float16()), dim)
    return table.set_column(table.schema.get_field_index("emb"), "emb", array.cast(emb.type))


def result_of(facts: FileFacts, check: str) -> CheckResult:
    result = facts.result(check)
    assert result is not None, f"{facts.name}: no {check} result"
    return result


def failed(facts: FileFacts) -> dict[str, str]:
    return {r.check: r.message for r in facts.failures()}


# --- a valid sample ------------------------------------------------------------------------


def test_valid_sample_passes_every_check(small_sample: Path) -> None:
    facts = [inspect(path) for path in sample_files(small_sample)]
    for f in facts:
        assert [r.check for r in f.results] == list(PER_FILE_CHECKS)
        assert f.passed, failed(f)
        assert (
            f.rows
            == f.footer_rows
            == pq.ParquetFile(small_sample / DEFAULT_CONFIG / f.name).metadata.num_rows
        )
    across = check_sorted_across(facts)
    assert across.passed, across.message
    assert across.details["boundaries"] == len(facts) - 1


def test_the_sample_holds_what_the_suite_must_tolerate(small_sample: Path) -> None:
    """NULL source_dataset, 32-hex uuids and NULL holes mid-hierarchy are all valid."""
    table = pa.concat_tables(pq.read_table(p) for p in sample_files(small_sample))
    assert table.column("source_dataset").null_count > 0
    uuids = table.column("uuid").to_pylist()
    assert any(len(u) == 32 for u in uuids) and any(len(u) == 36 for u in uuids)
    hole = pa.compute.and_(table.column("class").is_null(), table.column("order").is_valid())
    assert pa.compute.sum(hole).as_py() > 0


def test_facts_round_trip_through_json(small_sample: Path) -> None:
    facts = inspect(sample_files(small_sample)[0])
    again = FileFacts.from_json(facts.to_json())
    assert again == facts
    assert isinstance(again.first_key, tuple) and len(again.first_key) == len(SORT_KEY)


# --- bytes and footer ----------------------------------------------------------------------


def test_sha_mismatch_fails_naming_the_file(small_sample: Path) -> None:
    path = sample_files(small_sample)[0]
    facts = inspect(path, expected_sha256="0" * 64)
    assert set(failed(facts)) == {SHA256_MATCHES_UPSTREAM}
    assert path.name in failed(facts)[SHA256_MATCHES_UPSTREAM]
    assert "fetch the file again" in failed(facts)[SHA256_MATCHES_UPSTREAM]


def test_truncated_file_fails_the_footer_and_runs_nothing_else(
    small_sample: Path, tmp_path: Path
) -> None:
    source = sample_files(small_sample)[0]
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    facts = inspect(path, expected_sha256=sha256_file(source))
    failures = failed(facts)
    assert set(failures) == set(PER_FILE_CHECKS)
    assert "footer does not read" in failures[FOOTER_READS] and path.name in failures[FOOTER_READS]
    assert all("not run" in failures[c] for c in PER_FILE_CHECKS[2:])
    assert facts.rows is None and facts.first_key is None


def damaged_copies(source: Path, folder: Path) -> dict[str, Path]:
    """Copies of `source` that send the gate's pass over `emb` down each of its ways."""
    data = source.read_bytes()
    emb = pq.ParquetFile(source).metadata.row_group(1).column(1)
    copies = {
        "clean": data,
        "truncated": data[: len(data) // 2],
        "emb page zeroed": data[: emb.data_page_offset + 40]
        + bytes(200)
        + data[emb.data_page_offset + 240 :],
        "one byte flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
    }
    paths = {kind: folder / f"{kind}.parquet" for kind in copies}
    for kind, content in copies.items():
        paths[kind].write_bytes(content)
    paths["emb NULL in a row"] = rewrite(
        source, folder / "null_emb.parquet", lambda t: with_values(t, "emb", {3: None})
    )
    paths["no emb"] = rewrite(source, folder / "noemb.parquet", lambda t: t.drop_columns(["emb"]))
    return paths


def test_the_gates_own_sha256_is_the_files_whichever_way_emb_was_read(
    small_sample: Path, tmp_path: Path
) -> None:
    """Without the download's hash the gate hashes what it reads of `emb` (and the rest):
    pages in place, pyarrow after a surprise, no `emb`, no footer."""
    for kind, path in damaged_copies(sample_files(small_sample)[0], tmp_path).items():
        facts = inspect(path, expected_sha256=None)
        assert facts.sha256 == sha256_file(path), kind
        assert SHA256_MATCHES_UPSTREAM not in failed(facts), kind


@pytest.mark.parametrize("column", [0, 1], ids=["uuid", "emb"])
def test_a_corrupt_data_page_fails_rows_read(
    small_sample: Path, tmp_path: Path, column: int
) -> None:
    source = sample_files(small_sample)[0]
    chunk = pq.ParquetFile(source).metadata.row_group(1).column(column)
    data = bytearray(source.read_bytes())
    start = chunk.data_page_offset + 40
    data[start : start + 200] = bytes(200)
    path = tmp_path / source.name
    path.write_bytes(bytes(data))
    failures = failed(inspect(path))
    assert ROWS_MATCH_FOOTER in failures
    assert path.name in failures[ROWS_MATCH_FOOTER] and "not read" in failures[ROWS_MATCH_FOOTER]
    assert FOOTER_READS not in failures


# --- schema ----------------------------------------------------------------------------------


def test_extra_column_is_schema_drift(small_sample: Path, tmp_path: Path) -> None:
    path = rewrite(
        sample_files(small_sample)[0],
        tmp_path / "extra.parquet",
        lambda t: t.append_column("resolution_status", pa.array(["ok"] * t.num_rows)),
    )
    message = failed(inspect(path))[SCHEMA_MATCHES_CONTRACT]
    assert "extra.parquet" in message and "extra column 'resolution_status'" in message


def test_changed_type_and_missing_column_are_schema_drift(
    small_sample: Path, tmp_path: Path
) -> None:
    def change(table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index("publisher")
        table = table.set_column(index, "publisher", pa.array(range(table.num_rows), pa.int64()))
        return table.drop_columns(["img_type"])

    path = rewrite(sample_files(small_sample)[0], tmp_path / "types.parquet", change)
    facts = inspect(path)
    message = failed(facts)[SCHEMA_MATCHES_CONTRACT]
    assert "column 'publisher': expected string, found int64" in message
    assert "missing column 'img_type'" in message
    assert result_of(facts, SORTED_BY_CONTRACT_KEY).passed  # the other checks still ran


def test_emb_width_and_element_type_are_schema_drift(tmp_path: Path) -> None:
    wide = arrow_schema(dim=1024)
    table = pa.Table.from_pylist([], schema=wide)
    path = tmp_path / "wide.parquet"
    pq.write_table(table, path)
    assert (
        "column 'emb': width 1024, expected 768" in failed(inspect(path))[SCHEMA_MATCHES_CONTRACT]
    )

    floats = wide.set(1, pa.field("emb", pa.list_(pa.float32(), 768)))
    pq.write_table(pa.Table.from_pylist([], schema=floats), path)
    assert (
        "column 'emb': element type float, expected halffloat"
        in failed(inspect(path))[SCHEMA_MATCHES_CONTRACT]
    )


def test_schema_must_equal_the_last_validated_one(small_sample: Path) -> None:
    path = sample_files(small_sample)[0]
    last = SCHEMA.append(pa.field("resolution_status", pa.string()))
    failures = failed(inspect(path, last_validated_schema=last))
    assert set(failures) == {SCHEMA_MATCHES_LAST_VALIDATED}
    assert "last validated schema" in failures[SCHEMA_MATCHES_LAST_VALIDATED]
    assert "missing column 'resolution_status'" in failures[SCHEMA_MATCHES_LAST_VALIDATED]
    assert inspect(path, last_validated_schema=SCHEMA).passed


# --- rows ------------------------------------------------------------------------------------


def test_rows_against_the_card() -> None:
    dropped = check_rows_match_card(5_990, 6_000)
    assert not dropped.passed and "5,990" in dropped.message and "6,000" in dropped.message
    assert check_rows_match_card(6_000, 6_000).passed
    no_count = check_rows_match_card(6_000, None)
    assert no_count.passed and "no count" in no_count.message


def test_row_loss_over_the_limit_fails_unless_accepted() -> None:
    over = check_row_loss(10_000, 9_800, 0.01, accepted=False)
    assert not over.passed
    assert "200 of 10,000" in over.message and "--accept-row-loss" in over.message
    accepted = check_row_loss(10_000, 9_800, 0.01, accepted=True)
    assert accepted.passed and "accepted" in accepted.message
    assert check_row_loss(10_000, 9_950, 0.01, accepted=False).passed
    assert check_row_loss(10_000, 12_000, 0.0, accepted=False).passed
    assert check_row_loss(None, 5, 0.0, accepted=False).passed


# --- sort order ------------------------------------------------------------------------------


def test_unsorted_rows_name_the_first_bad_pair(small_sample: Path, tmp_path: Path) -> None:
    source = sample_files(small_sample)[0]
    table = pq.read_table(source)
    order = list(range(table.num_rows))
    order[100], order[1500] = order[1500], order[100]
    path = rewrite(source, tmp_path / "swapped.parquet", lambda t: t.take(order))
    facts = inspect(path)
    result = result_of(facts, SORTED_BY_CONTRACT_KEY)
    assert not result.passed
    bad_row = result.details["first_bad_row"]
    assert bad_row in (99, 100)
    assert f"rows {bad_row} and {bad_row + 1} are out of order" in result.message
    assert "swapped.parquet" in result.message and "NULL placement seen" in result.message
    assert result.details["key_before"] != result.details["key_after"]


def test_nulls_first_is_named_as_such(small_sample: Path, tmp_path: Path) -> None:
    source = sample_files(small_sample)[0]
    path = rewrite(
        source,
        tmp_path / "nulls_first.parquet",
        lambda t: t.sort_by([(c, "ascending", "at_start") for c in SORT_KEY]),
    )
    message = failed(inspect(path))[SORTED_BY_CONTRACT_KEY]
    assert "NULLs first in" in message
    assert "look sorted with NULLs first" in message


def test_null_holes_mid_hierarchy_do_not_fail_the_sort(tmp_path: Path) -> None:
    """Fishes with NULL class but a known order sort after every named class: not a defect."""
    rows = [
        ("Actinopterygii", "Perciformes", "Percidae"),
        ("Mammalia", "Carnivora", "Felidae"),
        (None, "Cypriniformes", "Cyprinidae"),
        (None, None, "Testudinidae"),
    ]
    table = pa.Table.from_pylist(
        [
            {
                "uuid": f"{i:032x}",
                "source_dataset": "gbif",
                "kingdom": "Animalia",
                "phylum": "Chordata",
                "class": klass,
                "order": order,
                "family": family,
            }
            for i, (klass, order, family) in enumerate(rows)
        ],
        schema=SCHEMA,
    )
    path = tmp_path / "holes.parquet"
    pq.write_table(table, path)
    result = result_of(inspect(path), SORTED_BY_CONTRACT_KEY)
    assert result.passed, result.message
    assert "NULLs last in 'class'" in result.message


def test_unsorted_across_a_file_boundary(small_sample: Path) -> None:
    facts = [inspect(path) for path in sample_files(small_sample)]
    swapped = [facts[1], facts[0], facts[2]]
    result = check_sorted_across(swapped)
    assert not result.passed
    assert f"{facts[1].name} ends with" in result.message
    assert f"but {facts[0].name} starts with" in result.message
    assert "column " in result.message


def test_an_empty_file_does_not_break_the_boundary_check(
    small_sample: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=SCHEMA), empty)
    facts = [inspect(path) for path in sample_files(small_sample)]
    middle = inspect(empty)
    assert middle.passed and middle.first_key is None
    assert check_sorted_across([facts[0], middle, facts[1]]).passed


# --- emb -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_emb_fails_naming_the_first_row(
    small_sample: Path, tmp_path: Path, value: float
) -> None:
    path = rewrite(
        sample_files(small_sample)[0],
        tmp_path / "nan.parquet",
        lambda t: with_emb_values(t, {(1234, 5): value, (1600, 700): value}),
    )
    result = result_of(inspect(path), EMB_FINITE)
    assert not result.passed
    assert "nan.parquet" in result.message and "first at row 1234" in result.message
    assert result.details["nonfinite_rows"] == 2


# --- metadata --------------------------------------------------------------------------------


def test_duplicate_uuid_within_a_file(small_sample: Path, tmp_path: Path) -> None:
    source = sample_files(small_sample)[0]
    uuid = pq.read_table(source, columns=["uuid"]).column("uuid")[3].as_py()
    path = rewrite(source, tmp_path / "dup.parquet", lambda t: with_values(t, "uuid", {1000: uuid}))
    failures = failed(inspect(path))
    assert set(failures) == {UUID_UNIQUE}  # one fault, one check: not the expectations too
    assert f"uuid {uuid!r} appears more than once (rows 3 and 1000)" in failures[UUID_UNIQUE]
    assert "dup.parquet" in failures[UUID_UNIQUE]


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("uuid", "NOT-A-UUID", "uuid is well formed"),
        ("uuid", "0123456789ABCDEF0123456789ABCDEF", "uuid is well formed"),
        ("uuid", None, "uuid is not null"),
        ("source_dataset", "inaturalist", "source_dataset is a known source"),
        ("kingdom", "2021-03-04T00:00:00", "kingdom is not a column-shift value"),
        ("kingdom", "true", "kingdom is not a column-shift value"),
        ("kingdom", "FALSE", "kingdom is not a column-shift value"),
    ],
)
def test_metadata_expectations_catch_bad_values(
    small_sample: Path, tmp_path: Path, column: str, value: str | None, expectation: str
) -> None:
    path = rewrite(
        sample_files(small_sample)[0],
        tmp_path / "bad.parquet",
        lambda t: with_values(t, column, {700: value}),
    )
    result = result_of(inspect(path), METADATA_EXPECTATIONS)
    assert not result.passed
    assert result.message.startswith("bad.parquet: ") and expectation in result.message
    if value is not None:
        assert repr(value) in result.message
    outcome = next(
        o for o in result.details["expectations"] if o["expectation"].startswith(expectation)
    )
    assert outcome["unexpected_count"] == 1


@pytest.mark.parametrize("column", ["family", "identifier"])
def test_a_metadata_page_that_does_not_decode_fails_the_file(
    small_sample: Path, tmp_path: Path, column: str
) -> None:
    """The gate reads `family` dictionary-encoded and `identifier` plain: either way every
    page is decoded, so a page upstream shipped damaged (its sha256 announced as is) fails."""
    path = tmp_path / "damaged.parquet"
    path.write_bytes(sample_files(small_sample)[0].read_bytes())
    chunk = pq.read_metadata(path).row_group(0).column(SCHEMA.get_field_index(column))
    with open(path, "r+b") as handle:
        start = chunk.data_page_offset
        _, header = page_header(path, handle, start, chunk.total_compressed_size)
        end = (chunk.dictionary_page_offset or start) + chunk.total_compressed_size
        handle.seek(start + header)
        handle.write(b"\xff" * (end - start - header))  # the page's compressed bytes
    failures = failed(inspect(path))
    assert "the metadata columns do not read" in failures[ROWS_MATCH_FOOTER]
    assert "damaged.parquet" in failures[ROWS_MATCH_FOOTER]


def test_missing_emb_column_reports_emb_not_run(small_sample: Path, tmp_path: Path) -> None:
    path = rewrite(
        sample_files(small_sample)[0], tmp_path / "noemb.parquet", lambda t: t.drop_columns(["emb"])
    )
    failures = failed(inspect(path))
    assert set(failures) == {SCHEMA_MATCHES_CONTRACT, EMB_FINITE, EMB_NORMS_WITHIN_BOUNDS}
    assert "not run: column 'emb' missing" in failures[EMB_FINITE]
    assert "not run: column 'emb' missing" in failures[EMB_NORMS_WITHIN_BOUNDS]


def test_hashes_for_the_cross_file_check_are_kept(small_sample: Path, tmp_path: Path) -> None:
    path = sample_files(small_sample)[0]
    keep = tmp_path / "hashes.npy"
    facts = inspect(path, uuid_hashes_path=keep)
    hashes = np.load(keep)
    assert hashes.size == facts.rows and np.all(hashes[1:] >= hashes[:-1])


def test_hashes_digests_and_crcs_are_kept_only_for_the_announced_bytes(
    small_sample: Path, tmp_path: Path
) -> None:
    """They are filed under the announced sha256: bytes that are not those must not fill it."""
    path = sample_files(small_sample)[0]
    for expected, kept in (("0" * 64, False), (sha256_file(path), True), (None, True)):
        arrays = tmp_path / str(expected)
        arrays.mkdir()
        keep = {
            "uuid_hashes_path": arrays / "h.npy",
            "emb_digests_path": arrays / "d.npy",
            "chunk_crcs_path": arrays / "c.npy",
        }
        facts = inspect(path, expected_sha256=expected, **keep)
        assert facts.result(SHA256_MATCHES_UPSTREAM).passed is kept  # type: ignore[union-attr]
        assert [p.is_file() for p in keep.values()] == [kept, kept, kept]


def test_files_inspected_in_parallel_threads_get_the_same_facts(small_sample: Path) -> None:
    """The sync gates each file in a download worker thread: GX and DuckDB must not mix them."""
    paths = sample_files(small_sample)
    alone = [inspect(path) for path in paths]
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        together = list(pool.map(inspect, paths))
    assert together == alone

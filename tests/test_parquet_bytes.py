"""Parquet at the byte level: footers round-trip byte for byte, spliced files read like the
row groups they were made of, and a row range read through the offset index equals pyarrow's."""

from __future__ import annotations

import builtins
import io
import struct
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.decoded import DECODED
from tol_dagster.parquet.footer import MAGIC, SpliceError, read_footer
from tol_dagster.parquet.pages import decode_rows, read_rows
from tol_dagster.parquet.splice import Splicer
from tol_dagster.parquet.thrift import I32, I64, STRUCT, Struct, read_struct, write_struct
from tol_dagster.schema import arrow_schema

SCHEMA = arrow_schema(dim=8)


def _table(rows: int, seed: int) -> pa.Table:
    """Rows with nulls, repeated values (dictionary pages), non-ASCII and random `emb`."""
    rng = np.random.default_rng(seed)
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.standard_normal(rows * 8).astype(np.float16)), 8
    )
    columns = {
        "uuid": pa.array([f"{seed}-{i:06d}" for i in range(rows)]),
        "emb": emb,
        **{
            name: pa.array(
                [None if i % 7 == 0 else f"{name}-{i // 50}-é" for i in range(rows)], pa.string()
            )
            for name in SCHEMA.names[2:]
        },
    }
    return pa.table(columns, schema=SCHEMA)


def _write(table: pa.Table, path: Path, **options: object) -> Path:
    settings: dict[str, object] = {
        "row_group_size": 1000,
        "data_page_size": 4096,
        "write_page_index": True,
        "compression": "zstd",
    }
    pq.write_table(table, path, **{**settings, **options})
    return path


def test_footers_round_trip_byte_for_byte(tmp_path: Path) -> None:
    written = _write(_table(3000, 1), tmp_path / "a.parquet")
    duck = tmp_path / "d.parquet"
    duckdb.sql(f"COPY (SELECT uuid, family FROM '{written}') TO '{duck}' (FORMAT parquet)")
    for path in (written, duck):
        data = path.read_bytes()
        size = struct.unpack("<I", data[-8:-4])[0]
        out = bytearray()
        write_struct(out, read_footer(path).meta)
        assert bytes(out) == data[-8 - size : -8]


def test_a_spliced_file_holds_the_chosen_row_groups_in_order(tmp_path: Path) -> None:
    one, two = _table(3000, 1), _table(2500, 2)
    a = read_footer(_write(one, tmp_path / "a.parquet"))
    b = read_footer(_write(two, tmp_path / "b.parquet"))
    sink = io.BytesIO()
    splicer = Splicer(sink, a)
    for footer, group in [(b, 2), (a, 0), (a, 2)]:
        splicer.add(footer, group)
    rows = splicer.close()
    out = tmp_path / "out.parquet"
    out.write_bytes(sink.getvalue())
    expected = pa.concat_tables([two.slice(2000, 500), one.slice(0, 1000), one.slice(2000, 1000)])
    assert rows == expected.num_rows == pq.read_metadata(out).num_rows
    assert pq.read_table(out).equals(expected)
    counted = duckdb.sql(f"SELECT count(*), min(uuid) FROM '{out}'")
    assert counted is not None and counted.fetchall() == [(2500, "1-000000")]
    footer = read_footer(out)  # page indexes moved along: reading through them still works
    assert all(footer.has_offset_index(g) for g in range(3))
    assert read_rows(footer, 1, 10, 20).cast(SCHEMA).equals(one.slice(10, 10))
    assert read_rows(footer, 2, 990, 1000).cast(SCHEMA).equals(one.slice(2990, 10))
    assert pq.ParquetFile(out).metadata.row_group(2).column(2).has_column_index


def test_splicing_leaves_the_shared_footers_it_copies_from_as_they_were(tmp_path: Path) -> None:
    """`read_footer` shares one parsed footer per file: the splicer changes copies of the
    parts it moves (offsets, ordinals, page index fields), never the cached footer."""
    one = _table(3000, 1)
    path = _write(one, tmp_path / "a.parquet")
    footer = read_footer(path)
    before = bytearray()
    write_struct(before, footer.meta)
    sink = io.BytesIO()
    splicer = Splicer(sink, footer)
    for group in (2, 2, 0):  # moved to other offsets, the same group twice
        splicer.add(footer, group)
    splicer.close()
    after = bytearray()
    write_struct(after, read_footer(path).meta)
    assert read_footer(path) is footer and after == before
    out = tmp_path / "out.parquet"
    out.write_bytes(sink.getvalue())
    expected = pa.concat_tables([one.slice(2000, 1000), one.slice(2000, 1000), one.slice(0, 1000)])
    assert pq.read_table(out).equals(expected)
    spliced = read_footer(out)
    assert read_rows(spliced, 1, 5, 15).cast(SCHEMA).equals(one.slice(2005, 10))


def test_files_with_another_physical_schema_are_refused(tmp_path: Path) -> None:
    a = read_footer(_write(_table(1000, 1), tmp_path / "a.parquet"))
    other = _table(1000, 2).drop_columns(["common_name"])
    b = read_footer(_write(other, tmp_path / "b.parquet"))
    splicer = Splicer(io.BytesIO(), a)
    splicer.add(a, 0)
    with pytest.raises(SpliceError, match="schema differs"):
        splicer.add(b, 0)


@pytest.mark.parametrize(
    ("group", "start", "stop"),
    [(0, 0, 1000), (1, 0, 1), (1, 999, 1000), (2, 123, 877), (0, 400, 401), (2, 0, 500)],
)
def test_a_row_range_read_by_pages_equals_pyarrows(
    tmp_path: Path, group: int, start: int, stop: int
) -> None:
    table = _table(3000, 3)
    path = _write(table, tmp_path / "a.parquet")
    assert pq.read_metadata(path).row_group(0).column(1).has_offset_index
    rows = read_rows(read_footer(path), group, start, stop).cast(SCHEMA)
    assert rows.equals(table.slice(group * 1000 + start, stop - start))


def test_columns_of_few_distinct_values_are_decoded_as_indices_and_read_as_values(
    tmp_path: Path,
) -> None:
    table = _table(3000, 5)  # metadata columns: 20 values per 1000 rows; uuid all distinct
    path = _write(table, tmp_path / "a.parquet")
    footer = read_footer(path)
    DECODED.entries.clear()
    DECODED.size = 0
    first = read_rows(footer, 1, 100, 300)
    kept = {entry.column.type for entry in DECODED.entries.values()}
    assert pa.dictionary(pa.int32(), pa.string()) in kept  # the repeated names, as indices
    assert pa.string() in kept  # uuid: as many values as rows, decoded as values
    again = read_rows(footer, 1, 250, 900)  # served from the decoded pages where they cover it
    for got, start in [(first, 100), (again, 250)]:
        assert not any(pa.types.is_dictionary(field.type) for field in got.schema)
        assert got.cast(SCHEMA).equals(table.slice(1000 + start, got.num_rows))

    empty = table.set_column(2, table.field(2), pa.nulls(3000, pa.string()))  # a 0-value dictionary
    path = _write(empty, tmp_path / "nulls.parquet")
    assert pq.read_metadata(path).row_group(1).column(2).has_dictionary_page
    assert read_rows(read_footer(path), 1, 100, 300).cast(SCHEMA).equals(empty.slice(1100, 200))


def test_pages_read_again_are_looked_up_once_and_read_without_opening_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank pass reads each page for several values: the second read of decoded pages gets
    their values looked up once for all their rows, kept so, and touches no file."""
    table = _table(3000, 5)
    path = _write(table, tmp_path / "a.parquet", data_page_size=1 << 20)  # a page per chunk
    footer = read_footer(path)
    DECODED.entries.clear()
    DECODED.size = 0
    read_rows(footer, 1, 100, 300)
    assert any(pa.types.is_dictionary(e.column.type) for e in DECODED.entries.values())

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"opened {args[0]}: its pages were decoded already")

    monkeypatch.setattr(builtins, "open", no_open)
    again = read_rows(footer, 1, 400, 900)
    assert again.cast(SCHEMA).equals(table.slice(1400, 500))
    assert not any(pa.types.is_dictionary(e.column.type) for e in DECODED.entries.values())
    assert read_rows(footer, 1, 0, 1000).cast(SCHEMA).equals(table.slice(1000, 1000))


def test_a_file_without_an_offset_index_cannot_be_read_by_pages(tmp_path: Path) -> None:
    path = _write(_table(1000, 4), tmp_path / "a.parquet", write_page_index=False)
    with pytest.raises(SpliceError, match="offset index"):
        read_rows(read_footer(path), 0, 10, 20)


def test_damaged_metadata_is_reported_as_such(tmp_path: Path) -> None:
    path = _write(_table(1000, 5), tmp_path / "a.parquet")
    data = bytearray(path.read_bytes())
    size = struct.unpack("<I", data[-8:-4])[0]
    data[-8 - size : -8 - size // 2] = bytes(size - size // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(SpliceError, match=r"damaged|not a plain"):
        read_footer(path)


# --- files from other writers and layouts, each read by pages and spliced ----------------------


def _awkward_table(rows: int, seed: int) -> pa.Table:
    """`_table` plus NULL `emb` rows and a column of all-distinct long strings (a dictionary
    that overflows its page and falls back to plain encoding mid-chunk)."""
    table = _table(rows, seed)
    rng = np.random.default_rng(seed)
    values = np.asarray(table["emb"].combine_chunks().values)
    nulls = pa.array(rng.random(rows) < 0.1)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values), 8, mask=nulls)
    distinct = pa.array(
        [f"{seed}-{i}-{rng.integers(1 << 60):x}-распознавание" for i in range(rows)]
    )
    table = table.set_column(1, "emb", emb)
    return table.set_column(
        table.schema.get_field_index("scientific_name"), "scientific_name", distinct
    )


def _pyarrow_variant(table: pa.Table, path: Path, **options: object) -> Path:
    """`table` written by pyarrow in row groups of 700 rows with an empty row group after the
    first, with page indexes and small pages."""
    settings: dict[str, object] = {
        "data_page_size": 2048,
        "write_page_index": True,
        "dictionary_pagesize_limit": 1024,
        **options,
    }
    with pq.ParquetWriter(path, table.schema, **settings) as writer:  # type: ignore[arg-type]
        writer.write_table(table.slice(0, 700), row_group_size=700)
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(700), row_group_size=700)
    return path


VARIANTS: dict[str, dict[str, object]] = {
    "v1-zstd": {"compression": "zstd"},
    "v2-snappy": {"compression": "snappy", "data_page_version": "2.0"},
    "v2-gzip": {"compression": "gzip", "data_page_version": "2.0"},
    "v1-gzip": {"compression": "gzip"},
    "v1-none": {"compression": "none"},
    "v2-none": {"compression": "none", "data_page_version": "2.0"},
    # As the mirror's files: `uuid` and `emb` without a dictionary (their pages read on their own).
    "v1-zstd-mirror": {"compression": "zstd", "use_dictionary": list(SCHEMA.names[2:])},
    "v1-none-mirror": {"compression": "none", "use_dictionary": list(SCHEMA.names[2:])},
}
AWKWARD_ROWS = 2500


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict[str, Path]]:
    """One table and the files that hold it, one per writer layout."""
    folder = tmp_path_factory.mktemp("variants")
    table = _awkward_table(AWKWARD_ROWS, 11)
    files = {name: _pyarrow_variant(table, folder / f"{name}.parquet", **options)
             for name, options in VARIANTS.items()}  # fmt: skip
    return table, files


def _group_rows(path: Path) -> list[int]:
    meta = pq.read_metadata(path)
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def test_the_variants_hold_what_their_names_say(awkward: tuple[pa.Table, dict[str, Path]]) -> None:
    table, files = awkward
    for name, path in files.items():
        meta = pq.read_metadata(path)
        assert _group_rows(path) == [700, 0, 700, 700, 400], name
        column = meta.row_group(0).column(table.schema.get_field_index("scientific_name"))
        assert column.has_dictionary_page and "PLAIN" in column.encodings, name  # fell back
        assert column.compression == name.split("-")[1].upper().replace("NONE", "UNCOMPRESSED")
        assert pq.read_table(path).equals(table), name
    assert table["emb"].null_count > 0


@pytest.mark.parametrize("name", VARIANTS)
def test_every_row_range_of_every_layout_reads_by_pages_like_pyarrow(
    awkward: tuple[pa.Table, dict[str, Path]], name: str
) -> None:
    table, files = awkward
    footer = read_footer(files[name])
    base = 0
    for group, rows in enumerate(_group_rows(files[name])):
        if rows:
            assert footer.has_offset_index(group)
            for start, stop in [(0, rows), (0, 1), (rows - 1, rows), (rows // 3, 2 * rows // 3)]:
                got = read_rows(footer, group, start, stop).cast(SCHEMA)
                assert got.equals(table.slice(base + start, stop - start)), (group, start, stop)
        base += rows


@pytest.mark.parametrize("name", VARIANTS)
def test_every_layout_splices_back_to_the_same_rows(
    awkward: tuple[pa.Table, dict[str, Path]], name: str, tmp_path: Path
) -> None:
    table, files = awkward
    footer = read_footer(files[name])
    order = [3, 1, 0, 4, 2]  # the empty row group too, and out of order
    sink = io.BytesIO()
    splicer = Splicer(sink, footer)
    for group in order:
        splicer.add(footer, group)
    splicer.close()
    out = tmp_path / "spliced.parquet"
    out.write_bytes(sink.getvalue())
    starts = np.concatenate([[0], np.cumsum(_group_rows(files[name]))])
    expected = pa.concat_tables([table.slice(starts[g], starts[g + 1] - starts[g]) for g in order])
    assert pq.read_table(out).equals(expected)
    again = read_footer(out)
    assert read_rows(again, 0, 5, 600).cast(SCHEMA).equals(expected.slice(5, 595))


def test_files_written_by_duckdb_copy_splice_and_decode_like_pyarrow(tmp_path: Path) -> None:
    table = _awkward_table(7000, 12)
    source = tmp_path / "source.parquet"
    pq.write_table(table, source)
    out = tmp_path / "duck.parquet"
    duckdb.sql(  # row groups are whole vectors of 2,048 rows
        f"COPY (SELECT * FROM '{source}') TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 2048, "
        "COMPRESSION snappy)"
    )
    written = pq.read_table(out)
    assert written.num_rows == 7000 and written["uuid"].equals(table["uuid"])
    assert len(_group_rows(out)) >= 3
    footer = read_footer(out)
    sink = io.BytesIO()
    splicer = Splicer(sink, footer)
    for group in (2, 0):
        splicer.add(footer, group)
    splicer.close()
    spliced = tmp_path / "spliced.parquet"
    spliced.write_bytes(sink.getvalue())
    starts = np.concatenate([[0], np.cumsum(_group_rows(out))])
    expected = pa.concat_tables(
        [written.slice(starts[g], starts[g + 1] - starts[g]) for g in (2, 0)]
    )
    assert pq.read_table(spliced).equals(expected)
    if footer.has_offset_index(1):
        got = read_rows(footer, 1, 10, 500).cast(written.schema)
    else:  # DuckDB writes no page index: the pages cannot be found, pyarrow decodes instead
        with pytest.raises(SpliceError, match="offset index"):
            read_rows(footer, 1, 10, 500)
        got = decode_rows(out, 1, 10, 500)
    assert got.equals(written.slice(starts[1] + 10, 490))


# --- nothing the page index says is trusted --------------------------------------------------


def _footer_bytes(path: Path) -> tuple[bytes, int]:
    data = path.read_bytes()
    size = struct.unpack("<I", data[-8:-4])[0]
    return data, len(data) - 8 - size


def _rewrite_footer(path: Path, change: Callable[[Struct], None]) -> None:
    """Rewrite `path`'s footer after `change` edits its metadata (the data stays in place)."""
    data, start = _footer_bytes(path)
    meta = read_footer(path).meta.copy()
    change(meta)
    out = bytearray()
    write_struct(out, meta)
    path.write_bytes(data[:start] + bytes(out) + struct.pack("<I", len(out)) + MAGIC)


def _chunks(meta: Struct, group: int) -> list[Struct]:
    return meta.get(4)[1][group].get(1)[1]


def test_an_offset_index_that_misplaces_a_page_is_caught_by_the_decoded_length(
    tmp_path: Path,
) -> None:
    table = _table(1000, 21)
    path = _write(table, tmp_path / "a.parquet", row_group_size=1000)
    column = 1  # emb: 16 kB in 4 kB pages
    chunk = _chunks(read_footer(path).meta, 0)[column]
    offset, length = chunk.get(4), chunk.get(5)
    data = bytearray(path.read_bytes())
    index, _ = read_struct(memoryview(bytes(data[offset : offset + length])), 0)
    pages = index.get(1)[1]
    assert len(pages) >= 3
    true_first = pages[1].get(3)
    pages[1].set(3, true_first + 3)  # says page 1 starts 3 rows later than it does
    blob = bytearray()
    write_struct(blob, index)
    assert len(blob) == length  # same varint width: written back in place
    data[offset : offset + length] = blob
    path.write_bytes(bytes(data))
    footer = read_footer(path)
    with pytest.raises(SpliceError, match="decode to"):
        read_rows(footer, 0, true_first + 5, true_first + 10)
    assert decode_rows(path, 0, true_first + 5, true_first + 10).equals(
        table.slice(true_first + 5, 5)
    )


def test_pages_out_of_their_column_chunk_are_refused(tmp_path: Path) -> None:
    path = _write(_table(1000, 22), tmp_path / "a.parquet", row_group_size=1000)

    def shrink(meta: Struct) -> None:  # the chunk claims fewer bytes than its pages take
        chunk = _chunks(meta, 0)[0].get(3)
        chunk.set(7, chunk.get(7) // 2)

    _rewrite_footer(path, shrink)
    with pytest.raises(SpliceError, match="does not fit its column chunk"):
        read_rows(read_footer(path), 0, 900, 1000)


@pytest.mark.parametrize(
    ("claimed", "refusal"), [(2**31 - 1, "pages past the end of the file"), (-5, "claims -5 bytes")]
)
def test_a_page_that_claims_more_bytes_than_the_file_holds_is_refused_before_it_is_read(
    tmp_path: Path, claimed: int, refusal: str
) -> None:
    """A dictionary page (after the data, where a damaged footer points) whose header claims
    2 GB, or less than nothing: refused by the file's size before a buffer of that size is
    made to read it into, or by its sign."""
    table = _table(1000, 24)
    path = _write(table, tmp_path / "a.parquet", row_group_size=1000)
    data, start = _footer_bytes(path)
    dictionary = Struct([[field_ids.DATA_NUM_VALUES, I32, 10], [field_ids.DATA_ENCODING, I32, 0]])
    header = Struct(
        [
            [field_ids.HEADER_TYPE, I32, field_ids.DICTIONARY_PAGE],
            [field_ids.HEADER_UNCOMPRESSED, I32, 2**31 - 1],
            [field_ids.HEADER_COMPRESSED, I32, claimed],
            [field_ids.HEADER_DICTIONARY, STRUCT, dictionary],
        ]
    )
    page = bytearray()
    write_struct(page, header)
    meta = read_footer(path).meta.copy()
    _chunks(meta, 0)[2].get(3).put(field_ids.CM_DICTIONARY_PAGE, I64, start)
    footer = bytearray()
    write_struct(footer, meta)
    path.write_bytes(data[:start] + page + footer + struct.pack("<I", len(footer)) + MAGIC)
    with pytest.raises(SpliceError, match=refusal):
        read_rows(read_footer(path), 0, 500, 900, columns=[table.column_names[2]])
    assert read_rows(read_footer(path), 0, 500, 900, columns=["uuid"]).num_rows == 400


def test_a_dictionary_page_is_found_from_the_column_metadata(tmp_path: Path) -> None:
    table = _table(1000, 23)
    path = _write(table, tmp_path / "a.parquet", row_group_size=1000)
    column = 2
    assert pq.read_metadata(path).row_group(0).column(column).has_dictionary_page

    def legacy(meta: Struct) -> None:  # old writers: no dictionary_page_offset, data page at it
        chunk = _chunks(meta, 0)[column].get(3)
        chunk.set(9, chunk.get(11))
        chunk.drop(11)

    _rewrite_footer(path, legacy)
    assert read_rows(read_footer(path), 0, 500, 900).cast(SCHEMA).equals(table.slice(500, 400))

    data_page = _first_data_page(path, column)

    def wrong(meta: Struct) -> None:  # dictionary_page_offset naming a data page
        chunk = _chunks(meta, 0)[column].get(3)
        chunk.put(11, 6, data_page)
        chunk.set(9, data_page)

    _rewrite_footer(path, wrong)
    with pytest.raises(SpliceError, match="no dictionary page"):
        read_rows(read_footer(path), 0, 500, 900)


def _first_data_page(path: Path, column: int) -> int:
    """The offset of the first data page of `column` in row group 0, from its offset index."""
    chunk = _chunks(read_footer(path).meta, 0)[column]
    with open(path, "rb") as handle:
        handle.seek(chunk.get(4))
        index, _ = read_struct(memoryview(handle.read(chunk.get(5))), 0)
    return int(index.get(1)[1][0].get(1))


# --- property: any row range reads like pyarrow ------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_row_range_of_any_layout_equals_a_pyarrow_slice(
    awkward: tuple[pa.Table, dict[str, Path]], data: st.DataObject
) -> None:
    table, files = awkward
    name = data.draw(st.sampled_from(sorted(files)), label="layout")
    rows = _group_rows(files[name])
    group = data.draw(st.sampled_from([g for g, n in enumerate(rows) if n]), label="row group")
    start = data.draw(st.integers(0, rows[group] - 1), label="start")
    stop = data.draw(st.integers(start + 1, rows[group]), label="stop")
    base = sum(rows[:group])
    got = read_rows(read_footer(files[name]), group, start, stop).cast(SCHEMA)
    assert got.equals(table.slice(base + start, stop - start))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 1500),
    page_size=st.sampled_from([256, 1024, 8192]),
    version=st.sampled_from(["1.0", "2.0"]),
    compression=st.sampled_from(["none", "snappy", "zstd"]),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_random_layouts_read_any_range_like_pyarrow(
    tmp_path_factory: pytest.TempPathFactory,
    rows: int,
    page_size: int,
    version: str,
    compression: str,
    seed: int,
    data: st.DataObject,
) -> None:
    table = _awkward_table(rows, seed)
    path = tmp_path_factory.mktemp("random") / "a.parquet"
    pq.write_table(
        table, path, row_group_size=max(1, rows // 2), data_page_size=page_size,
        data_page_version=version, compression=compression, write_page_index=True,
        dictionary_pagesize_limit=page_size,
    )  # fmt: skip
    sizes = _group_rows(path)
    group = data.draw(st.integers(0, len(sizes) - 1), label="row group")
    start = data.draw(st.integers(0, sizes[group] - 1), label="start")
    stop = data.draw(st.integers(start + 1, sizes[group]), label="stop")
    got = read_rows(read_footer(path), group, start, stop).cast(SCHEMA)
    assert got.equals(table.slice(sum(sizes[:group]) + start, stop - start))

"""Footer fields kept as wire bytes (`thrift.Raw`): skipped exactly, written back as they came,
and the fields the splicer reads or sets parsed as before."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tol_dagster.parquet import field_ids
from tol_dagster.parquet.footer import FOOTER_SHAPE, SPLICED_ROWS_SHAPE, parse_footer
from tol_dagster.parquet.page_splice import whole_columns
from tol_dagster.parquet.thrift import (
    BINARY,
    BYTE,
    DOUBLE,
    FALSE,
    I16,
    I32,
    I64,
    LIST,
    MAP,
    STRUCT,
    TRUE,
    Raw,
    Shape,
    Struct,
    read_struct,
    skip_value,
    write_struct,
    write_value,
)


def _footer_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    size = struct.unpack("<I", data[-8:-4])[0]
    return data[-8 - size : -8]


def _files(tmp_path: Path) -> list[Path]:
    """Footers with every kind of field FOOTER_SHAPE keeps raw: statistics of strings and
    numbers, encoding stats, size statistics, sorting columns, column orders; and DuckDB's."""
    table = pa.table(
        {
            "name": pa.array([None if i % 5 == 0 else f"é-{i // 3}" for i in range(5000)]),
            "n": pa.array(range(5000), pa.int64()),
            "x": pa.array([i / 7 for i in range(5000)], pa.float64()),
            "emb": pa.array([[float(i), None] for i in range(5000)], pa.list_(pa.float16())),
        }
    )
    paths = []
    for number, options in enumerate(
        [
            {},
            {"write_page_index": True, "row_group_size": 700, "data_page_size": 1024},
            {
                "sorting_columns": [pq.SortingColumn(1)],
                "write_statistics": ["n"],
                "compression": "zstd",
            },
            {"write_statistics": False, "use_dictionary": False},
        ]
    ):
        path = tmp_path / f"{number}.parquet"
        pq.write_table(table, path, **options)
        paths.append(path)
    duck = tmp_path / "duck.parquet"
    duckdb.sql(f"COPY (SELECT name, n FROM '{paths[0]}') TO '{duck}' (FORMAT parquet)")
    return [*paths, duck]


def _same(shaped: Any, plain: Any, kind: int = STRUCT) -> bool:
    """`shaped` holds what `plain` holds: the same values where parsed, and where it kept a
    field raw, that field's wire bytes."""
    if isinstance(shaped, Raw):
        out = bytearray()
        write_value(out, kind, plain)
        return bytes(out) == shaped
    if isinstance(shaped, Struct):
        return len(shaped.fields) == len(plain.fields) and all(
            a[:2] == b[:2] and _same(a[2], b[2], a[1])
            for a, b in zip(shaped.fields, plain.fields, strict=True)
        )
    if kind == LIST and isinstance(shaped, tuple):
        return shaped[0] == plain[0] and all(
            _same(a, b, shaped[0]) for a, b in zip(shaped[1], plain[1], strict=True)
        )
    return bool(shaped == plain)


@pytest.mark.parametrize("shape", [FOOTER_SHAPE, SPLICED_ROWS_SHAPE], ids=["footer", "rows"])
def test_a_shaped_footer_writes_back_byte_for_byte_and_parses_the_rest_as_before(
    tmp_path: Path, shape: Shape
) -> None:
    raw_fields = 0
    for path in _files(tmp_path):
        blob = _footer_bytes(path)
        shaped, end = read_struct(memoryview(blob), 0, shape)
        plain, _ = read_struct(memoryview(blob), 0)
        assert end == len(blob)
        out = bytearray()
        write_struct(out, shaped)
        assert bytes(out) == blob
        assert _same(shaped, plain)
        meta = shaped.get(field_ids.FILE_ROW_GROUPS)[1][0].get(field_ids.RG_COLUMNS)[1][0]
        stats = meta.get(field_ids.CC_META).get(field_ids.CM_STATISTICS)
        raw_fields += isinstance(stats, Raw)
        # Raw values survive the splicer's copies and drops
        copy = shaped.copy()
        out = bytearray()
        write_struct(out, copy)
        assert bytes(out) == blob
    assert raw_fields >= 3  # the statistics were kept raw, not parsed


@pytest.mark.parametrize("page_index", [True, False])
def test_the_columns_of_rows_just_written_are_the_same_however_their_footer_is_parsed(
    tmp_path: Path, page_index: bool
) -> None:
    """`slices.write` parses the footer of each row group it encodes with SPLICED_ROWS_SHAPE:
    its columns for the splicer are what the full parse gives (bytes, metadata, indexes)."""
    for path in _files(tmp_path):
        table = pq.read_table(path).slice(0, 1200)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=len(table), write_page_index=page_index)
        data = sink.getvalue()
        full = whole_columns(parse_footer(memoryview(data), path, data))
        lean = whole_columns(parse_footer(memoryview(data), path, data, SPLICED_ROWS_SHAPE))
        assert len(full) == len(lean) == table.num_columns  # one leaf each
        for a, b in zip(full, lean, strict=True):
            assert a.parts == b.parts
            assert a.column_index == b.column_index
            for x, y in ((a.chunk, b.chunk), (a.offset_index, b.offset_index)):
                wire_x, wire_y = bytearray(), bytearray()
                if x is not None:
                    write_struct(wire_x, x)
                if y is not None:
                    write_struct(wire_y, y)
                assert wire_x == wire_y
            assert (a.offset_index is not None) == page_index
        raw = lean[0].chunk.get(field_ids.CC_META).get(field_ids.CM_PATH)
        assert isinstance(raw, Raw)  # kept as bytes, not parsed


def test_a_footer_with_raw_fields_dropped_is_the_plain_footer_with_them_dropped(
    tmp_path: Path,
) -> None:
    for path in _files(tmp_path):
        shaped = parse_footer(path.read_bytes(), path).meta  # as the splicer parses footers
        plain = read_struct(memoryview(_footer_bytes(path)), 0)[0]
        for meta, other in zip(_metas(shaped), _metas(plain), strict=True):
            meta.drop(*field_ids.CM_OF_ALL_ROWS)
            other.drop(*field_ids.CM_OF_ALL_ROWS)
        shaped_out, plain_out = bytearray(), bytearray()
        write_struct(shaped_out, shaped)
        write_struct(plain_out, plain)
        assert shaped_out == plain_out


def _metas(meta: Struct) -> list[Struct]:
    return [
        chunk.get(field_ids.CC_META)
        for group in meta.get(field_ids.FILE_ROW_GROUPS)[1]
        for chunk in group.get(field_ids.RG_COLUMNS)[1]
    ]


# --- skip_value against the writer, on random values -------------------------------------------

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    I16: st.integers(-(1 << 15), (1 << 15) - 1),
    I32: st.integers(-(1 << 31), (1 << 31) - 1),
    I64: st.integers(-(1 << 63), (1 << 63) - 1),
    BINARY: st.binary(max_size=40),
    DOUBLE: st.floats(allow_nan=False),
    BYTE: st.integers(-128, 127),
}


def _value(depth: int) -> st.SearchStrategy[tuple[int, Any]]:
    scalars = st.sampled_from(sorted(_SCALARS)).flatmap(
        lambda kind: _SCALARS[kind].map(lambda v: (kind, v))
    )
    if depth == 0:
        return scalars
    lists = st.sampled_from([I32, BINARY, I64]).flatmap(
        lambda kind: st.lists(_SCALARS[kind], max_size=20).map(lambda v: (LIST, (kind, v)))
    )
    structs = _struct(depth - 1).map(lambda s: (STRUCT, s))
    struct_lists = st.lists(_struct(depth - 1), max_size=16).map(
        lambda items: (LIST, (STRUCT, items))
    )
    maps = st.lists(st.tuples(st.binary(max_size=8), _SCALARS[I32]), max_size=4).map(
        lambda pairs: (MAP, (BINARY, I32, pairs))
    )
    return st.one_of(scalars, lists, structs, struct_lists, maps)


def _struct(depth: int) -> st.SearchStrategy[Struct]:
    field = st.one_of(
        _value(depth),
        st.booleans().map(lambda b: (TRUE if b else FALSE, b)),
    )
    return st.lists(st.tuples(st.integers(1, 300), field), max_size=6).map(
        lambda fields: Struct(
            [[i, kind, value] for i, (kind, value) in sorted(dict(fields).items())]
        )
    )


@settings(max_examples=300, deadline=None)
@given(_struct(2), st.binary(max_size=4))
def test_skip_value_ends_where_the_struct_ends(value: Struct, after: bytes) -> None:
    out = bytearray()
    write_struct(out, value)
    assert skip_value(memoryview(bytes(out) + after), 0, STRUCT) == len(out)
    # a struct read with every field raw writes back the same bytes
    shape = {i: None for i, _, _ in value.fields}
    raw, end = read_struct(memoryview(bytes(out)), 0, shape)
    assert end == len(out)
    again = bytearray()
    write_struct(again, raw)
    assert again == out


@settings(max_examples=200, deadline=None)
@given(_struct(2), st.data())
def test_a_truncated_struct_is_refused_not_skipped_past(value: Struct, data: Any) -> None:
    out = bytearray()
    write_struct(out, value)
    cut = data.draw(st.integers(0, len(out) - 1))
    with pytest.raises((IndexError, ValueError)):
        skip_value(memoryview(bytes(out[:cut])), 0, STRUCT)


def test_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown thrift type"):
        skip_value(memoryview(bytes([0x1D, 0])), 0, STRUCT)  # field 1 of type 13


def test_raw_values_are_written_as_they_are() -> None:
    out = bytearray()
    write_value(out, STRUCT, Raw(b"\x15\x04\x00"))
    assert out == b"\x15\x04\x00"


def test_a_struct_that_repeats_a_field_is_damaged() -> None:
    """One value per field: a struct giving field 1 twice (the second in the long form, as a
    writer never would) is refused, and its footer with it, rather than one value dropped."""
    repeated = b"\x15\x04\x05\x02\x06\x00"  # i32 field 1 = 2, then field 1 again = 3
    with pytest.raises(ValueError, match="field 1 repeated"):
        read_struct(memoryview(repeated), 0)
    single = Struct([[1, I32, 2], [2, I32, 3]])
    out = bytearray()
    write_struct(out, single)
    assert read_struct(memoryview(bytes(out)), 0)[0].fields == [[1, I32, 2], [2, I32, 3]]

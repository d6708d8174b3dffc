"""Thrift compact protocol, as parquet footers, page headers and page indexes use it.

Structs are read into `Struct`s keyed by field id that keep every field, known or not, in wire
order, and are written back as read: a footer rewritten by the splicer changes in nothing but
the fields it sets. Fields nothing here reads (a column's statistics, say) can be kept as their
wire bytes (`Raw`, chosen by a `Shape`): skipped over rather than built, and written back as
they came. Malformed bytes raise IndexError, struct.error or ValueError; callers that know the
file turn them into `SpliceError` naming it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

# Thrift compact protocol types.
TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
_INTS = (I16, I32, I64)


class Raw(bytes):
    """A field's value kept as its wire bytes: never read, written back as it came."""


#: Which fields of a struct `read_struct` keeps as `Raw` (None) or reads with a shape of their
#: own (a struct, or each struct of a list); fields not named are read as usual.
Shape = dict[int, "Shape | None"]


class Struct:
    """A Thrift struct as read: its fields by id, each (type, value), in wire order, unknown
    fields kept. A dict, not a list: a rank pass looks fields up millions of times."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[list[Any]] | dict[int, tuple[int, Any]]) -> None:
        self._fields = (
            fields if isinstance(fields, dict) else {i: (kind, v) for i, kind, v in fields}
        )

    @property
    def fields(self) -> list[list[Any]]:
        """(field id, type, value) of each field, in order."""
        return [[i, kind, value] for i, (kind, value) in self._fields.items()]

    def items(self) -> Iterable[tuple[int, tuple[int, Any]]]:
        return self._fields.items()

    def get(self, field_id: int, default: Any = None) -> Any:
        field = self._fields.get(field_id)
        return default if field is None else field[1]

    def set(self, field_id: int, value: Any) -> None:
        self._fields[field_id] = (self._fields[field_id][0], value)

    def put(self, field_id: int, kind: int, value: Any) -> None:
        """Set a field, adding it in field-id order if absent."""
        self._fields[field_id] = (kind, value)
        self._fields = dict(sorted(self._fields.items()))

    def drop(self, *field_ids: int) -> None:
        for field_id in field_ids:
            self._fields.pop(field_id, None)

    def has(self, field_id: int) -> bool:
        return field_id in self._fields

    def copy(self) -> Struct:
        return Struct({i: (t, _copy(t, v)) for i, (t, v) in self._fields.items()})

    def shallow(self) -> Struct:
        """A copy whose own fields may be set, added or dropped; their values are shared."""
        return Struct(dict(self._fields))


def read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _read_int(data: memoryview, pos: int) -> tuple[int, int]:
    raw, pos = read_varint(data, pos)
    return (raw >> 1) ^ -(raw & 1), pos


# The readers below are the hot path of every footer and page header we parse: the common
# kinds are tested first (integers, structs) and a one-byte integer is decoded inline, about a
# quarter cheaper than a dispatch per value.
_unpack_byte = struct.Struct("<b").unpack_from
_unpack_double = struct.Struct("<d").unpack_from


def _read_value(data: memoryview, pos: int, kind: int) -> tuple[Any, int]:
    if kind in _INTS:
        raw, pos = read_varint(data, pos)
        return (raw >> 1) ^ -(raw & 1), pos
    if kind == STRUCT:
        return read_struct(data, pos)
    if kind == BINARY:
        size, pos = read_varint(data, pos)
        return bytes(data[pos : pos + size]), pos + size
    if kind in (LIST, SET):
        size, element, pos = _list_header(data, pos)
        items: list[Any] = []
        append = items.append
        for _ in range(size):
            item, pos = (
                read_struct(data, pos) if element == STRUCT else _read_value(data, pos, element)
            )
            append(item)
        return (element, items), pos
    if kind in (TRUE, FALSE):  # only in containers: one byte each
        return data[pos] == TRUE, pos + 1
    if kind == BYTE:
        return _unpack_byte(data, pos)[0], pos + 1
    if kind == DOUBLE:
        return _unpack_double(data, pos)[0], pos + 8
    if kind == MAP:
        return _read_map(data, pos)
    raise ValueError(f"unknown thrift type {kind} in a parquet footer")


def _list_header(data: memoryview, pos: int) -> tuple[int, int, int]:
    """A list's or set's size and element type, and the position of its first element."""
    header = data[pos]
    size, pos = header >> 4, pos + 1
    if size == 15:
        size, pos = read_varint(data, pos)
    return size, header & 0x0F, pos


def _read_map(data: memoryview, pos: int) -> tuple[Any, int]:
    size, pos = read_varint(data, pos)
    if size == 0:
        return (0, 0, []), pos
    key_kind, value_kind = data[pos] >> 4, data[pos] & 0x0F
    pos += 1
    pairs = []
    for _ in range(size):
        key, pos = _read_value(data, pos, key_kind)
        value, pos = _read_value(data, pos, value_kind)
        pairs.append((key, value))
    return (key_kind, value_kind, pairs), pos


def read_struct(data: memoryview, pos: int, shape: Shape | None = None) -> tuple[Struct, int]:
    """The struct at `pos` of `data`, and the position after it; `shape` says which fields
    to keep as `Raw`."""
    fields: dict[int, tuple[int, Any]] = {}
    field_id = 0
    while True:
        header = data[pos]
        pos += 1
        if header == 0:
            return Struct(fields), pos
        kind = header & 0x0F
        if header >> 4:
            field_id += header >> 4
        else:
            field_id, pos = _read_int(data, pos)
        if field_id in fields:  # one value per field: a struct that repeats one is damaged
            raise ValueError(f"field {field_id} repeated in a struct")
        if kind in _INTS:
            byte = data[pos]
            if byte < 0x80:
                pos += 1
                fields[field_id] = (kind, (byte >> 1) ^ -(byte & 1))
            else:
                raw, pos = read_varint(data, pos)
                fields[field_id] = (kind, (raw >> 1) ^ -(raw & 1))
        elif kind in (TRUE, FALSE):
            fields[field_id] = (kind, kind == TRUE)
        elif shape is not None and field_id in shape:
            value, pos = _shaped(data, pos, kind, shape[field_id])
            fields[field_id] = (kind, value)
        else:
            value, pos = _read_value(data, pos, kind)
            fields[field_id] = (kind, value)


def _shaped(data: memoryview, pos: int, kind: int, shape: Shape | None) -> tuple[Any, int]:
    """A value read as `shape` says: its wire bytes (None), or a struct (or each struct of a
    list) read with `shape`."""
    if shape is None:
        end = skip_value(data, pos, kind)
        return Raw(data[pos:end]), end
    if kind == STRUCT:
        return read_struct(data, pos, shape)
    if kind not in (LIST, SET) or data[pos] & 0x0F != STRUCT:
        return _read_value(data, pos, kind)
    size, _, pos = _list_header(data, pos)
    items = []
    for _ in range(size):
        item, pos = read_struct(data, pos, shape)
        items.append(item)
    return (STRUCT, items), pos


def skip_value(data: memoryview, pos: int, kind: int) -> int:
    """The position after the value of Thrift type `kind` at `pos`, nothing built."""
    if kind in _INTS:
        while data[pos] & 0x80:
            pos += 1
        return pos + 1
    if kind == BINARY:
        size, pos = read_varint(data, pos)
        if pos + size > len(data):
            raise IndexError("a binary value runs past the end of the data")
        return pos + size
    if kind == STRUCT:
        while (header := data[pos]) != 0:
            pos += 1
            if not header >> 4:
                pos = skip_value(data, pos, I16)
            if header & 0x0F not in (TRUE, FALSE):  # a boolean field is its header
                pos = skip_value(data, pos, header & 0x0F)
        return pos + 1
    if kind in (LIST, SET):
        size, element, pos = _list_header(data, pos)
        for _ in range(size):
            pos = skip_value(data, pos, element)
        return pos
    if kind in (TRUE, FALSE, BYTE):  # TRUE and FALSE: in containers, one byte each
        return pos + 1
    if kind == DOUBLE:
        return pos + 8
    if kind == MAP:
        return _read_map(data, pos)[1]
    raise ValueError(f"unknown thrift type {kind} in a parquet footer")


def write_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _write_int(out: bytearray, value: int) -> None:
    write_varint(out, (value << 1) ^ (value >> 63))


def write_value(out: bytearray, kind: int, value: Any) -> None:
    """Append `value`, of Thrift type `kind`, to `out`."""
    if isinstance(value, Raw):
        out += value
    elif kind in _INTS:
        _write_int(out, value)
    elif kind == STRUCT:
        write_struct(out, value)
    elif kind in (TRUE, FALSE):
        out.append(TRUE if value else FALSE)
    elif kind == BYTE:
        out += struct.pack("<b", value)
    elif kind == DOUBLE:
        out += struct.pack("<d", value)
    elif kind == BINARY:
        write_varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        element, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | element)
        else:
            out.append(0xF0 | element)
            write_varint(out, len(items))
        for item in items:
            write_value(out, element, item)
    elif kind == MAP:
        key_kind, value_kind, pairs = value
        write_varint(out, len(pairs))
        if pairs:
            out.append(key_kind << 4 | value_kind)
            for key, item in pairs:
                write_value(out, key_kind, key)
                write_value(out, value_kind, item)
    else:
        write_struct(out, value)


def write_struct(out: bytearray, value: Struct) -> None:
    """Append the struct `value` to `out`, its fields in the order they are held."""
    last = 0
    append = out.append
    for field_id, (kind, item) in value.items():
        boolean = kind in (TRUE, FALSE)
        wire_kind = (TRUE if item else FALSE) if boolean else kind
        if 0 < field_id - last <= 15:
            append((field_id - last) << 4 | wire_kind)
        else:
            append(wire_kind)
            _write_int(out, field_id)
        last = field_id
        if boolean:
            continue
        if kind in _INTS and -64 <= item < 64:  # one byte, zigzag encoded: most of a footer
            append((item << 1) ^ (item >> 63))
        else:
            write_value(out, kind, item)
    append(0)


_COPIERS: dict[int, Callable[[Any], Any]] = {
    STRUCT: lambda v: v.copy(),
    LIST: lambda v: (v[0], [_copy(v[0], x) for x in v[1]]),
    SET: lambda v: (v[0], [_copy(v[0], x) for x in v[1]]),
    MAP: lambda v: (v[0], v[1], [(_copy(v[0], k), _copy(v[1], x)) for k, x in v[2]]),
}


def _copy(kind: int, value: Any) -> Any:
    copier = _COPIERS.get(kind)
    return value if copier is None or isinstance(value, Raw) else copier(value)

"""A parquet file written row group by row group, its fixed-size list column of floats encoded
here (`list_encode`) and its other columns by pyarrow (`encoded_columns`), spliced into one
file (`ListTableWriter`, over `splice.Splicer`).

Why: pyarrow's writer builds a nested list's levels value by value, about 3.6 µs a row of 768
floats: most of what writing a table of embeddings costs (a slice's encoded rows, the centroid
table). Other readers see an ordinary parquet file: its footer is the one pyarrow's writer
gives the schema (the Arrow schema in its metadata), its columns but the list pyarrow's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tol_dagster.parquet import list_encode
from tol_dagster.parquet.footer import SPLICED_ROWS_SHAPE, Footer, parse_footer
from tol_dagster.parquet.page_splice import whole_columns
from tol_dagster.parquet.splice import Column, Splicer, Writable

#: pyarrow's writer of a table of `schema` (the columns pyarrow encodes) onto `sink`, for a row
#: group of `rows` rows: the caller's writer settings.
OpenWriter = Callable[[Any, pa.Schema, int], pq.ParquetWriter]


def list_chunk(
    schema: pa.Schema, template: Footer, column: str, zstd_level: int
) -> list_encode.ListChunk | None:
    """What `list_encode` needs to write `column`'s chunks in files of `template` (the footer
    pyarrow's writer gives `schema`); None when it is not a fixed-size list of floats."""
    kind = schema.field(column).type
    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_floating(kind.value_type):
        return None
    return list_encode.ListChunk(dict(template.top_level_fields())[column], zstd_level)


def encoded_columns(
    table: pa.Table,
    schema: pa.Schema,
    column: str,
    chunk: list_encode.ListChunk | None,
    codec: str,
    open_writer: OpenWriter,
) -> list[Column]:
    """The rows of `table` (some of `schema`'s columns, in its order) as one row group's
    column chunks, for `Splicer.add_columns`: `column` by `list_encode` with `codec` when it
    can (`chunk` given, the plain regular case), the others (all of them otherwise) by the
    writer `open_writer` opens, with `schema`'s fields (a table that differs is refused)."""
    encoded = None
    if chunk is not None and column in table.column_names:
        encoded = list_encode.encode_list_column(table.column(column), chunk, codec)
    rest = table.drop_columns([column]) if encoded is not None else table
    columns = []
    if rest.num_columns:
        buffer = pa.BufferOutputStream()
        subset = pa.schema([schema.field(name) for name in rest.column_names])
        with open_writer(buffer, subset, rest.num_rows) as writer:
            writer.write_table(rest, row_group_size=max(rest.num_rows, 1))
        data = buffer.getvalue()
        footer = parse_footer(memoryview(data), Path("<rows>"), data, SPLICED_ROWS_SHAPE)
        columns = whole_columns(footer)
    if encoded is not None:
        columns.insert(table.column_names.index(column), encoded)
    return columns


def template_footer(schema: pa.Schema, open_writer: OpenWriter) -> Footer:
    """The footer `open_writer`'s writer gives an empty file of `schema`: the template of files
    spliced with these settings (physical schema, the Arrow schema in its key-value metadata,
    the writer's name)."""
    sink = pa.BufferOutputStream()
    open_writer(sink, schema, 0).close()
    data = sink.getvalue()
    return parse_footer(memoryview(data), Path("<template>"), data=data)


class ListTableWriter:
    """Writes a table of `schema` to `sink` a row group per `write_table` (none for no rows),
    `column` encoded by `list_encode` (uncompressed), the rest by `open_writer`'s writer; then
    `close` writes the footer. What pyarrow's `ParquetWriter` would write, but the list."""

    def __init__(
        self, sink: Writable, schema: pa.Schema, column: str, open_writer: OpenWriter
    ) -> None:
        template = template_footer(schema, open_writer)
        self.schema, self.column, self.open_writer = schema, column, open_writer
        self.chunk = list_chunk(schema, template, column, zstd_level=0)
        self.splicer = Splicer(sink, template)

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            columns = encoded_columns(
                table, self.schema, self.column, self.chunk, "none", self.open_writer
            )
            self.splicer.add_columns(columns, table.num_rows)

    def close(self) -> None:
        self.splicer.close()

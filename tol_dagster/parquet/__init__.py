"""Parquet at the byte level: the Thrift compact codec, footers, copying whole row groups into a
new file (`splice.Splicer`), reading a row range page by page (`pages.read_rows`) and
copying the pages wholly inside a row range (`page_splice`), a fixed-size list column's
values straight from its decompressed pages (`list_values`, file by file `list_pages`), and files of keyed segments whose
next version copies the unchanged ones (`segmented`).

Used by slice extraction and the gate's pass over `emb`, where decoding `emb` through Arrow's
nested lists would dominate the cost, and by the derived tables' updates. May import: nothing of tol_dagster outside this package.
"""

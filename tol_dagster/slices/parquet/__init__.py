"""Parquet at the byte level: the Thrift compact codec, footers, copying whole row groups into a
new file (`splice.Splicer`), reading a row range page by page (`pages.read_rows`) and
copying the pages wholly inside a row range (`page_splice`).

Used by slice extraction, where decoding and re-encoding `emb` would dominate the cost. May
import: nothing of tol_dagster outside this package (pyarrow decodes the pages).
"""

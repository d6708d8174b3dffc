"""Per-taxon slices: their keys; where a key's rows are (`locate`) and how many (`counts`);
reading them (`read`, `splices` for partial row groups copied page by page, through
`tol_dagster.parquet` at the byte level) and writing them (`write`, `sink`) into a
checked (`checks`), atomically published file (`extract`); one record per built slice
(`records`), which slices to (re)build (`rebuilds`), and the catalog file (`catalog_file`).

May import: the foundations, `store`, `validation`, `derived` (the taxon index, what it was
built from).
"""
